"""Studies: one function per measured question, each writing JSON + a markdown table."""

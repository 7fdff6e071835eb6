"""Presentation: figures, the HTML comparison page, console tables and the result views the docs embed.

This layer sits above the application modules and below the CLI: it draws and formats what the layers below
return (reports, training logs, rows of a finalized run) and never runs a stage itself."""

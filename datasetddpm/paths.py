"""Where the shipped models live (inside the installed package)."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
EMBEDDED_MODEL_DIR = ASSETS / "embedded" / "ddpm"
EMBEDDED_ORACLE_DIR = ASSETS / "embedded" / "oracle"
EMBEDDED_STYLEGAN2_DIR = ASSETS / "embedded" / "stylegan2"

"""Where the shipped models live (inside the installed package), and how records name model folders."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
EMBEDDED_MODEL_DIR = ASSETS / "embedded" / "ddpm"
EMBEDDED_ORACLE_DIR = ASSETS / "embedded" / "oracle"
EMBEDDED_STYLEGAN2_DIR = ASSETS / "embedded" / "stylegan2"


# A record (an ensemble's ensemble.json) names the model folder it was made with relative to its own folder when
# both lie in one tree, so that moving the whole tree keeps them together; other models, and names such as
# "embedded" or "adm:...", are recorded as they are.
def record_path(target: str, folder: str | Path) -> str:
    """`target` (a model folder, absolute) as a record in `folder` names it: relative to `folder` when their
    nearest common folder is below the filesystem root, else unchanged."""
    import os
    path = Path(target)
    if not target or not path.is_absolute() or not path.is_dir():
        return target
    here, there = Path(folder).resolve(), path.resolve()
    common = Path(os.path.commonpath([here, there]))
    return target if common == Path(common.anchor) else os.path.relpath(there, here)


def resolve_recorded(value: str, folder: str | Path, fallback: str = "") -> str:
    """The folder a record in `folder` names (`record_path`'s inverse). A relative record is resolved against
    `folder`; when nothing is there (the record was moved without the model), `fallback` (the absolute path
    recorded beside it) if that exists. Absolute records (every record made before relative ones) and names
    are returned unchanged."""
    if not value or value.startswith("adm:") or value in ("embedded", "embedded-stylegan2"):
        return value
    if Path(value).is_absolute():
        return value
    resolved = (Path(folder).resolve() / value).resolve()
    if not resolved.is_dir() and fallback and Path(fallback).is_dir():
        return fallback
    return str(resolved)

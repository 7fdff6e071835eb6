"""`--config run.yaml` on every command, and the resolved arguments saved beside each command's output.

A config file gives option values by name (`n: 5000`, `sampling-steps: 20`), either flat or in one
section per command (`sample: {...}`, `finalize: {...}`), so one file can describe a whole run.
Precedence: flags on the command line, then the file, then the defaults. After a command succeeds,
its resolved arguments go to `<out>/<command>.args.yaml` (timm's `args.yaml` habit), which
`datasetddpm show-config DIR` prints.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
import yaml

from ..errors import InputError
from ..io import atomic_path

ARGS_SUFFIX = ".args.yaml"


def _yaml_value(value):
    """Lists in a YAML file become the comma lists the options take (`blocks: [5, 6]` -> "5,6")."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def read_config_file(path: Path, command: str, commands: set[str]) -> dict:
    """The values `path` gives `command`: its own section, else the file's top-level keys that are not
    other commands' sections."""
    if not path.is_file():
        raise InputError(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text())  # safe_load: plain data only, never Python objects
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid YAML ({' '.join(str(e).split())[:160]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, f"must map option names to values, got a {type(data).__name__}")
    if set(data) == {"command", "args"} and isinstance(data["args"], dict):  # a saved <command>.args.yaml
        if data["command"] != command:
            raise InputError(path, f"holds the arguments of `datasetddpm {data['command']}`, not of {command}")
        return {k: v for k, v in data["args"].items() if k != "config" and v is not None}
    if isinstance(data.get(command), dict):
        return dict(data[command])
    return {k: v for k, v in data.items() if not (k in commands and isinstance(v, dict))}


def apply_config_file(ctx: typer.Context, param, value: Path | None):
    """Eager callback of `--config`: the file's values become the command's defaults (click's
    `default_map`), so flags given on the command line still win."""
    if value is None or ctx.resilient_parsing:
        return value
    commands = set(ctx.parent.command.list_commands(ctx.parent)) if ctx.parent else set()
    values = read_config_file(Path(value), ctx.info_name, commands)
    names = {}
    for p in ctx.command.params:
        for opt in (p.name, *getattr(p, "opts", ())):
            names[opt.lstrip("-").replace("-", "_")] = p.name
    defaults = {}
    for key, v in values.items():
        name = names.get(str(key).replace("-", "_"))
        if name is None or name == "config":
            raise InputError(value, f"{key!r} is not an option of `datasetddpm {ctx.info_name}`")
        defaults[name] = _yaml_value(v)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def save_resolved_args(command: str, kwargs: dict) -> None:
    """`<out>/<command>.args.yaml` with every argument as the command ran with it (rank 0 only)."""
    out = kwargs.get("out")
    if kwargs.get("dry_run") or out is None or not Path(out).is_dir() or os.environ.get("RANK", "0") != "0":
        return
    # `out` is where the file lies: leaving it out keeps the file the same wherever the run is (a killed
    # and resumed run ends byte-identical to an uninterrupted one in another folder).
    body = {"command": command, "args": {k: _plain(v) for k, v in kwargs.items() if k != "out"}}
    with atomic_path(Path(out) / f"{command}{ARGS_SUFFIX}") as tmp:
        tmp.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def resolved_args_in(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise InputError(directory, "directory not found")
    found = sorted(directory.glob(f"*{ARGS_SUFFIX}"))
    if not found:
        raise InputError(directory, f"holds no *{ARGS_SUFFIX}: it was not written by a datasetddpm command")
    return found

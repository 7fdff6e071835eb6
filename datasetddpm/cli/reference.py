"""The CLI reference, generated from the typer app itself so it cannot drift from the code.

`python -m datasetddpm.cli.reference --write` rewrites `docs/cli.md` (every command with every
option) and the command table in README.md (between its `cli-commands` markers);
`tests/test_cli_reference.py` fails when either differs from what the app renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .main import get_app

README_START, README_END = "<!-- cli-commands:start -->", "<!-- cli-commands:end -->"


def _commands() -> list[tuple[str, object]]:
    group = typer.main.get_command(get_app())
    return [(name, group.commands[name]) for name in group.commands]


def _summary(command) -> str:
    return " ".join((command.help or "").strip().split("\n\n")[0].split())


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option_row(param) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
    else:
        name = " / ".join(f"`{o}`" for o in [*param.opts, *getattr(param, "secondary_opts", [])])
    if param.required:
        default = "required"
    elif getattr(param, "is_flag", False) and not param.default:
        default = "off"
    else:
        default = "" if param.default is None else f"`{param.default}`"
    return f"| {name} | {default} | {_cell(getattr(param, 'help', '') or '')} |"


def command_table() -> str:
    """README: one row per command."""
    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| `datasetddpm {name}` | {_cell(_summary(cmd))} |" for name, cmd in _commands()]
    return "\n".join(rows) + "\n"


def full_reference() -> str:
    """docs/cli.md: every command, its description and every option with its default."""
    parts = ["# Command-line reference", "",
             "Generated from the app by `python -m datasetddpm.cli.reference --write`; `datasetddpm COMMAND --help` "
             "prints the same. Every command also takes `--config FILE` (YAML; flags override it).", ""]
    for name, cmd in _commands():
        parts += [f"## `datasetddpm {name}`", "", " ".join((cmd.help or "").split()), "",
                  "| option | default | meaning |", "|---|---|---|"]
        parts += [_option_row(p) for p in cmd.params if p.name != "config" and not getattr(p, "hidden", False)]
        parts.append("")
    return "\n".join(parts)


def readme_with_table(readme: str) -> str:
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[:start] + "\n" + command_table() + readme[end:]


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[2]
    readme, docs = root / "README.md", root / "docs" / "cli.md"
    if "--write" in argv:
        readme.write_text(readme_with_table(readme.read_text()))
        docs.write_text(full_reference())
        return 0
    sys.stdout.write(full_reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

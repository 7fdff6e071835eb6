"""Structure rules that reviews would otherwise check by hand: no import cycles in the package,
function-level imports included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "datasetddpm"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    assert find_cycle(import_graph()) is None


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "split these: " + "; ".join(long)


# Layers, bottom to top: the core (models, data, the pipeline's stages and their helpers), the application
# modules that combine them into workflows and reports, and the CLI on top. Nothing imports a layer above it.
APPLICATION = ("workflows", "demo", "compare", "studies", "suggest", "plans", "probe", "export")
CORE = ("data", "direct", "ensemble", "features", "generators", "pipeline", "segmenters", "errors", "io", "rundir",
        "paths", "seeds", "progress", "devices", "distributed", "environment",
        "presets")


def _layer_violations(graph: dict[str, set[str]], lower: tuple[str, ...], upper: tuple[str, ...]) -> list[str]:
    def top(module: str) -> str:
        return module.split(".")[1] if "." in module else ""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() if top(a) in lower
                  for b in targets if top(b) in upper)


def test_the_layer_check_finds_an_upward_import():
    graph = {"datasetddpm.io": {"datasetddpm.cli.app"}, "datasetddpm.cli.app": {"datasetddpm.io"}}
    assert _layer_violations(graph, ("io",), ("cli",)) == ["datasetddpm.io -> datasetddpm.cli.app"]


def test_only_the_cli_and_the_entry_point_import_the_cli():
    graph = import_graph()
    library = tuple({name.split(".")[1] for name in graph if "." in name} - {"cli", "__main__"})
    assert not _layer_violations(graph, library, ("cli",))


def test_the_core_imports_no_application_module():
    graph = import_graph()
    assert not _layer_violations(graph, CORE, APPLICATION)
    assert not set(APPLICATION) & set(CORE)


def test_the_cli_lays_out_no_tables_and_computes_no_arrays():
    """Command bodies are argument handling plus a library call: tables are `console`'s, numbers the library's."""
    offenders = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("rich", "numpy")]
    assert not offenders, offenders


def test_every_preset_deeplab_setting_is_a_train_deeplab_option():
    """`Preset.deeplab` (DeepLabSettings) is the subset of DeepLabTrainConfig a preset fixes: every field of
    it must exist there, or `train-deeplab --preset` would drop or refuse it."""
    from dataclasses import fields
    from datasetddpm.presets import DeepLabSettings
    from datasetddpm.segmenters.train_deeplab import DeepLabTrainConfig
    assert {f.name for f in fields(DeepLabSettings)} <= {f.name for f in fields(DeepLabTrainConfig)}

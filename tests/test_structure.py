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


# Layers, bottom to top. A module imports only its own layer or lower ones (function-level imports count), so
# a trainer cannot draw (presentation) and a stage cannot reach into a workflow: what the lower layers draw goes
# through `hooks.Figures`, implemented by `reporting` and installed by the CLI.
LAYERS = {
    "foundation": ("errors", "io", "seeds", "devices", "progress", "paths", "rundir", "environment", "distributed",
                   "hooks", "schedules"),
    "models and data": ("data", "generators", "features", "ensemble", "segmenters"),
    "stages": ("direct", "pipeline", "labelling_tools"),
    "application": ("workflows", "studies", "export", "demo", "compare", "plans", "probe", "suggest", "presets",
                    "reproduce", "downloads", "recipes"),
    "presentation": ("reporting",),
    "cli": ("cli", "__main__"),
}


def _top(module: str) -> str:
    """`datasetddpm.data.shards` -> `data`; the package's own `__init__` -> ``."""
    return module.split(".")[1] if "." in module else ""


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph collapsed to top-level modules and packages (edges inside one package dropped)."""
    packages = {_top(m): set() for m in graph if _top(m)}
    for a, targets in graph.items():
        for b in targets:
            if _top(a) and _top(b) and _top(a) != _top(b):
                packages[_top(a)].add(_top(b))
    return packages


def layer_violations(graph: dict[str, set[str]], layers: dict[str, tuple[str, ...]] = LAYERS) -> list[str]:
    """Every import of a module in a higher layer than the importer's: `a -> b (lower layer -> higher layer)`."""
    rank = {top: (i, name) for i, (name, tops) in enumerate(layers.items()) for top in tops}
    return sorted(f"{a} -> {b} ({rank[_top(a)][1]} -> {rank[_top(b)][1]})" for a, targets in graph.items()
                  if _top(a) in rank for b in targets if _top(b) in rank and rank[_top(b)][0] > rank[_top(a)][0])


def unassigned(graph: dict[str, set[str]], layers: dict[str, tuple[str, ...]] = LAYERS) -> list[str]:
    assigned = [top for tops in layers.values() for top in tops]
    return sorted({_top(m) for m in graph if _top(m)} - set(assigned))


def test_the_layer_checks_catch_a_violation():
    graph = {"datasetddpm.io": {"datasetddpm.cli.app"}, "datasetddpm.cli.app": {"datasetddpm.io"},
             "datasetddpm.segmenters.train": {"datasetddpm.reporting.figures", "datasetddpm.io"},
             "datasetddpm.reporting.figures": {"datasetddpm.data.shards"}, "datasetddpm.data.shards": set(),
             "datasetddpm.newthing": set()}
    assert layer_violations(graph) == [
        "datasetddpm.io -> datasetddpm.cli.app (foundation -> cli)",
        "datasetddpm.segmenters.train -> datasetddpm.reporting.figures (models and data -> presentation)"]
    assert unassigned(graph) == ["newthing"]
    # Two packages that import each other form a cycle once collapsed, though no module imports itself back.
    modules = {"datasetddpm.data.generated": {"datasetddpm.pipeline.shards"},
               "datasetddpm.pipeline.shards": {"datasetddpm.data.images"}, "datasetddpm.data.images": set()}
    assert find_cycle(modules) is None
    assert find_cycle(package_graph(modules)) == ["data", "pipeline", "data"]


def test_every_module_is_in_exactly_one_layer():
    assigned = [top for tops in LAYERS.values() for top in tops]
    assert len(assigned) == len(set(assigned)), "a module is in two layers"
    assert not unassigned(import_graph()), "assign these to a layer in LAYERS"


def test_no_module_imports_a_higher_layer():
    violations = layer_violations(import_graph())
    assert not violations, "upward imports: " + "; ".join(violations)


def test_no_package_level_import_cycle():
    """Collapsed to top-level packages, the graph has no cycle (also between two packages of one layer)."""
    assert find_cycle(package_graph(import_graph())) is None


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

"""The package's import graph (issue #40): no module imports, directly or through others, a module that imports
it back, counting the imports inside functions too (they only defer a cycle to the moment the function runs); and
imports only go down the package's layers (``LAYERS``, the map of docs/layout.md). Parsed, not imported: no Ray,
no torch."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "tinyllm_ray"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules ``path`` imports anywhere in it (``from X import y`` counts ``X.y`` when that is a
    module, else ``X``); ``if TYPE_CHECKING:`` blocks left out (they never run)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                    for a in node.names}
    return {m for m in out if m in known}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def package_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(package_graph()) == []


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import() -> None:
    """The two cycles removed on 2026-12-07, put back: stages -> student.arms (a function-level import of the
    checkpoint layout) and tiny_trained -> tiny (tiny calls into tiny_trained inside build_tiny_models)."""
    graph = package_graph()
    assert "tinyllm_ray.tiny_trained" in graph["tinyllm_ray.tiny"]  # parsed inside the function
    for a, b in (("tinyllm_ray.markers", "tinyllm_ray.student.arms"), ("tinyllm_ray.tiny_trained", "tinyllm_ray.tiny")):
        edited = {**graph, a: graph[a] | {b}}
        assert any({a, b} <= c for c in cycles(edited)), (a, b)


# The package's layers, lowest first: a module imports from its own layer or lower ones, never higher (within a
# layer the cycle check above keeps the order). A new module goes in the layer of what it is, and the test names
# it until it is placed.
LAYERS = (
    # facts and helpers that know nothing of a run
    {"input_checks", "markers", "devices", "metrics", "answers", "console", "tiny_parts", "model_files"},
    # the config, the data, prompt text and what models write back, stage keys and results, the run directory
    {"config", "data", "replies", "prompts", "keys", "results", "runs", "run_lock", "estimate", "resources",
     "compare", "tiny_trained", "tiny"},
    # the stages' own machinery: teachers and student never import each other
    {"teachers", "student", "tracking"},
    # what uses the stages: the sweep (trains students), the stage contract, the report and what it shares
    {"sweep", "workflow", "report", "publish", "tiny_skill"},
    # preparing a run and joining Ray
    {"prepare", "connect"},
    # the run, the dry run, the commands
    {"pipeline", "dry_run", "predict", "k8s"},
    {"cli"},
)
# Parts of one layer that must not import each other.
SIBLINGS = (("teachers", "student"),)


def part_of(module: str) -> str:
    """``tinyllm_ray.teachers.stage`` -> ``teachers``; the package itself -> ``tinyllm_ray``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(module: str) -> int:
    part = part_of(module)
    found = [i for i, layer in enumerate(LAYERS) if part in layer]
    assert found, f"{module}: in no layer of LAYERS (tests/unit/test_imports.py): place it"
    return found[0]


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer to a higher one, or between the parts of ``SIBLINGS``."""
    out = []
    for module, imported in graph.items():
        if module == "tinyllm_ray":
            continue
        for other in imported:
            if layer_of(other) > layer_of(module):
                out.append(f"{module} -> {other}")
            if {part_of(module), part_of(other)} in [set(pair) for pair in SIBLINGS]:
                out.append(f"{module} -> {other} (siblings)")
    return sorted(out)


def test_imports_only_go_down_the_layers() -> None:
    assert upward(package_graph()) == []


def test_the_layer_check_sees_an_upward_import() -> None:
    """The upward imports issue #40 found, put back: the tracking of training importing the sweep, the dry run's
    view imported by a command below it, and a teacher module importing the student."""
    graph = package_graph()
    for a, b in (("tinyllm_ray.tracking", "tinyllm_ray.sweep.space"), ("tinyllm_ray.runs", "tinyllm_ray.pipeline"),
                 ("tinyllm_ray.teachers.runner", "tinyllm_ray.student.batches")):
        assert upward({**graph, a: graph[a] | {b}}) != [], (a, b)


MAX_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    """A module holds one idea; past 400 lines it holds several (issue #40): split it where the ideas part."""
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_map_of_the_code_names_every_module() -> None:
    """docs/layout.md is the one map of the code: every module's file appears in it (a package's modules by their
    file names, in its entry)."""
    layout = (REPO / "docs" / "layout.md").read_text()
    missing = sorted(name for name, path in modules().items() if path.name not in ("__init__.py", "__main__.py")
                     and not re.search(rf"(?<![\w/.]){re.escape(path.name)}", layout))
    assert missing == []

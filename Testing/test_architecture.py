"""The product's shape: no import loop (late imports included), small files, callers that never ask which runner.

The import graph is read from the source (every ``import`` statement, at module level or inside a function), so a
loop hidden behind a late import is found as surely as one at the top of a file.
"""

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

MODULE_DIR = Path(__file__).resolve().parents[1] / "UNetSigmoidSeg"
LIB = MODULE_DIR / "UNetSigmoidSegLib"
MAX_LINES = 400


def product_files() -> List[Path]:
    return sorted(p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts) + [MODULE_DIR / "UNetSigmoidSeg.py"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(MODULE_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Product module → the product modules it imports anywhere in its source (``from .x import y`` counts as
    ``x.y`` when ``y`` is a module, else as ``x``)."""
    files = {module_name(p): p for p in product_files()}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: List[str] = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            deps.update(t for t in targets if t in files and t != name)
        graph[name] = deps
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_late_imports_and_the_cycle_finder_finds_a_loop():
    graph = import_graph()
    assert "UNetSigmoidSegLib.runners.remote" in graph["UNetSigmoidSegLib.runners"]  # imported inside make_runner
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_loop_in_the_product_late_imports_included():
    assert cycles(import_graph()) == []


def test_no_product_file_over_400_lines():
    long = [
        f"{p.relative_to(MODULE_DIR)}: {n}"
        for p in product_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, long


def test_callers_never_ask_which_runner_they_hold():
    """Runners have no ``kind``; what differs is on the protocol (``runs_here``, ``Job.info.summary()``)."""
    asked = []
    for path in product_files():
        if "runners" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"runner\w*\.kind\b|isinstance\([^)]*(InProcess|Worker|Remote)Runner", line):
                asked.append(f"{path.name}:{number}: {line.strip()}")
    assert not asked, asked


def test_the_engine_host_is_the_only_model_cache_and_progress_throttle():
    """One ``load_model`` call site for runs (the host's cache), one throttle, one exception → message mapping."""
    sources = {p: p.read_text(encoding="utf-8") for p in product_files()}
    loaders = sorted(p.name for p, s in sources.items() if re.search(r"\bload_model\(", s) and "engine" not in p.parts)
    assert loaders == ["host.py"], loaders
    throttles = sorted(p.name for p, s in sources.items() if "PROGRESS_INTERVAL_S =" in s)
    assert throttles == ["host.py"], throttles
    prefix_parsers = sorted(p.name for p, s in sources.items() if 'startswith("warning: ")' in s)
    assert prefix_parsers == [], prefix_parsers

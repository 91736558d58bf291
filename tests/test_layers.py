"""The import direction of pyproject.toml's import-linter contracts: tl.core is the layer tl and
analysis share; analysis imports nothing else of tl, tl never imports analysis, tl.core needs
neither torch nor Ray, and tl's sub-packages stand in floors (search | use, train, data, core) that
import only downwards. lint-imports reads imports inside functions too; so does the cycle check."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, env=env, timeout=120)


def test_the_import_contracts_hold():
    proc = _lint(ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.count(" KEPT") == 6, proc.stdout[-2000:]


def test_a_function_level_import_across_the_layers_breaks_them(tmp_path):
    """The contracts are not vacuous: an import hidden in a function body is caught, in each direction."""
    for part in ("tl", "analysis", "pyproject.toml"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    with open(tmp_path / "tl" / "core" / "metrics.py", "a") as f:
        f.write("\n\ndef _late():\n    import torch\n")
    with open(tmp_path / "analysis" / "report.py", "a") as f:
        f.write("\n\ndef _late():\n    from tl.search.cli import main\n")
    with open(tmp_path / "tl" / "export.py", "a") as f:
        f.write("\n\ndef _late():\n    from analysis.report_data import build_report_data\n")
    with open(tmp_path / "tl" / "data" / "carve.py", "a") as f:  # a floor importing one above it
        f.write("\n\ndef _late():\n    from tl.train.models import get_backbone\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert proc.stdout.count(" BROKEN") == 4, proc.stdout[-3000:]
    for edge in ("tl.core.metrics -> torch", "analysis.report -> tl.search", "tl.export -> analysis.report_data",
                 "tl.data.carve -> tl.train.models"):
        assert edge in proc.stdout, f"{edge} not reported:\n{proc.stdout[-3000:]}"


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in adj:
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others():
    """No import circle in tl or analysis, as grimp (import-linter's graph) sees them, function-level
    imports included: a circle is what made tl/audit.py and tl/data one knot before the sub-packages."""
    import grimp

    assert _cycles(grimp.build_graph("tl", "analysis")) == []


def test_the_cycle_check_finds_a_circle(tmp_path):
    import grimp

    pkg = tmp_path / "knot"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from knot import b\n")
    (pkg / "b.py").write_text("from knot import c\n")
    (pkg / "c.py").write_text("import knot.a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert _cycles(grimp.build_graph("knot")) == [["knot.a", "knot.b", "knot.c"]]
    finally:
        sys.path.remove(str(tmp_path))

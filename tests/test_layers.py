"""The import direction of pyproject.toml's import-linter contracts: tl.core is the layer tl and
analysis share; analysis imports nothing else of tl, tl never imports analysis, and tl.core needs
neither torch nor Ray. lint-imports reads imports inside functions too."""
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
    assert proc.stdout.count(" KEPT") == 3, proc.stdout[-2000:]


def test_a_function_level_import_across_the_layers_breaks_them(tmp_path):
    """The contracts are not vacuous: an import hidden in a function body is caught, in each direction."""
    for part in ("tl", "analysis", "pyproject.toml"):
        source = ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    with open(tmp_path / "tl" / "core" / "metrics.py", "a") as f:
        f.write("\n\ndef _late():\n    import torch\n")
    with open(tmp_path / "analysis" / "report.py", "a") as f:
        f.write("\n\ndef _late():\n    from tl.search import main\n")
    with open(tmp_path / "tl" / "export.py", "a") as f:
        f.write("\n\ndef _late():\n    from analysis.report_data import build_report_data\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert proc.stdout.count(" BROKEN") == 3, proc.stdout[-3000:]
    for edge in ("tl.core.metrics -> torch", "analysis.report -> tl.search", "tl.export -> analysis.report_data"):
        assert edge in proc.stdout, f"{edge} not reported:\n{proc.stdout[-3000:]}"

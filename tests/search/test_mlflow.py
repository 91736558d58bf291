"""``--mlflow`` without MLflow installed. The runs themselves are checked on the shared smoke search
(tests/search/test_search_e2e.py: its session fixture is computed on that file's worker)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def _search(data_dir: Path, storage: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(data_dir),
           "--storage", str(storage), "--name", "tracked", "--num-samples", "2", "--max-epochs", "2", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env or os.environ.copy())


def test_missing_mlflow_is_one_line_naming_the_extra(tmp_path, small_data_dir):
    blocker = tmp_path / "blocked" / "mlflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mlflow is not installed (test stand-in)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}
    proc = _search(small_data_dir, tmp_path / "results", "--mlflow", env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["error: --mlflow needs MLflow: pip install -e '.[mlflow]'"], proc.stderr
    assert not (tmp_path / "results" / "tracked").exists(), "nothing may be written before the error"
    assert "Ray" not in proc.stdout, "the error must come before Ray starts"

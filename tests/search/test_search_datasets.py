"""One ``tl.search`` command over two datasets (issue 30): one experiment each under a common folder,
each with its own split audit, choice and test, then the recipes side by side."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_cases import in_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_datasets_in_one_command_give_two_experiments_and_the_table(tmp_path: Path, small_data_dir: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "tl.search", "search_spaces/smoke.py",
         "--dataset", str(small_data_dir / "pneumoniamnist.npz"), "--dataset", str(small_data_dir / "chest_xray"),
         "--storage", str(tmp_path), "--name", "both", "--num-samples", "1", "--max-epochs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    out = proc.stdout
    assert proc.returncode == 0, (out + proc.stderr)[-3000:]
    parent = tmp_path / "both"
    for label, classes in (("pneumoniamnist", 2), ("chest_xray", 2)):
        meta = json.loads((parent / label / "tl_search.json").read_text())
        assert meta["split_audit"]["seconds"] >= 0, f"{label} has no split audit of its own"
        assert len(list((parent / label).glob("*/params.json"))) == 1, f"{label}: not its 1 trial"
        assert len(meta["dataset"]["class_names"]) == classes
    fingerprints = {json.loads((parent / d / "tl_search.json").read_text())["dataset"]["test_fingerprint"]
                    for d in ("pneumoniamnist", "chest_xray")}
    assert len(fingerprints) == 2, "each dataset is tested on its own test split"
    assert out.count("recommended model: trial") == 2, "one answer per dataset"
    assert "recipes across 2 datasets" in out
    row = next(line for line in out.splitlines() if line.startswith("  convmodel, none, none:"))
    assert "pneumoniamnist 0." in row and "chest_xray 0." in row and "over 2" in row, row
    assert f"analysis.summarize {parent / 'pneumoniamnist'} {parent / 'chest_xray'}" in out


def test_a_bad_second_dataset_stops_before_any_search(tmp_path: Path, small_data_dir: Path):
    proc = in_process("tl.search", ["search_spaces/smoke.py", "--dataset", str(small_data_dir / "pneumoniamnist.npz"),
                                    "--dataset", str(tmp_path / "missing"), "--storage", str(tmp_path / "r"),
                                    "--name", "x", "--offline"])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], proc.stderr
    assert not (tmp_path / "r" / "x").exists(), "nothing written before the inputs were checked"


def test_a_space_file_names_several_datasets(tmp_path: Path):
    from tl.search.space import load_space

    path = tmp_path / "two.py"
    path.write_text('DATASETS = ["chest_xray", "kather2016_240"]\nBACKBONES = {"convmodel": ["none"]}\n')
    assert load_space(path).datasets == ["chest_xray", "kather2016_240"]
    path.write_text('DATASET = "chest_xray"\nDATASETS = ["kather2016_240"]\n')
    with pytest.raises(Exception, match="DATASET .* or DATASETS .*not both"):
        load_space(path)

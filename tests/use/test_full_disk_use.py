"""tl.export and tl.predict on a full disk (issue 28, item 3): one error line, exit 2, no traceback,
and nothing half-written at --out. On a real 1 MB tmpfs where the machine allows mounting one, and
with the failing write injected everywhere."""
from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest

import tl.use.export
from bundle_builders import build_experiment, write_region_folder
from cli_cases import in_process
from small_fs import MB, fill, small_tmpfs


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A one-trial experiment (one epoch: the weights' size is what matters here) and its bundle."""
    root = tmp_path_factory.mktemp("full_disk_use")
    data = write_region_folder(root / "data", n_per_class=24)
    build_experiment(root / "exp", data, [{"seed": 1, "lr": 3e-3, "epochs": 1}])
    done = in_process("tl.export", [str(root / "exp"), "--out", str(root / "bundle"), "--gradcam", "0"])
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "data": data, "exp": root / "exp", "bundle": root / "bundle"}


def _one_error_line(done, what: str) -> str:
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("[tl.data]")]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "No space left on device" in lines[0], lines[0]
    assert what in lines[0], lines[0]
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "filler")


def test_export_on_a_full_disk_leaves_no_bundle_and_no_temporary_folder(exported: dict,
                                                                       monkeypatch: pytest.MonkeyPatch):
    written = []

    def half_then_full(state, path: Path):
        path.write_bytes(b"\0" * 1000)  # safetensors had begun the file
        written.append(path)
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(tl.use.export, "save_weights", half_then_full)
    out = exported["root"] / "injected" / "bundle"
    line = _one_error_line(in_process("tl.export", [str(exported["exp"]), "--out", str(out), "--gradcam", "0"]),
                           f"nothing was written to --out {out}")
    assert written, "the injected failure never ran: the test proves nothing"
    assert not out.exists() and _leftovers(out.parent) == [], _leftovers(out.parent)
    assert line.startswith("error: the disk is full"), line


def test_export_onto_a_real_full_tmpfs(exported: dict, tmp_path: Path):
    with small_tmpfs(tmp_path / "small", MB) as small:  # ConvModel's weights alone are 1.4 MB
        out = small / "bundle"
        _one_error_line(in_process("tl.export", [str(exported["exp"]), "--out", str(out), "--gradcam", "0"]),
                        f"nothing was written to --out {out}")
        assert _leftovers(small) == [], _leftovers(small)


def test_predict_on_a_full_disk_leaves_no_csv(exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def full(self, rows):
        self.writer.writerow(["a", "partial", "row"])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(csv.DictWriter, "writerows", full)
    out = tmp_path / "predictions.csv"
    _one_error_line(in_process("tl.predict", [str(exported["bundle"]), str(exported["data"]), "--out", str(out)]),
                    f"--out {out}: cannot write the predictions")
    assert _leftovers(tmp_path) == [], _leftovers(tmp_path)


def test_predict_onto_a_real_full_tmpfs_for_the_csv_and_for_grad_cam(exported: dict, tmp_path: Path):
    with small_tmpfs(tmp_path / "small", MB) as small:
        fill(small, leave=0)
        out = small / "predictions.csv"
        _one_error_line(in_process("tl.predict", [str(exported["bundle"]), str(exported["data"]), "--out", str(out)]),
                        f"--out {out}: cannot write the predictions")
        assert _leftovers(small) == [], _leftovers(small)
        roomy = tmp_path / "predictions.csv"
        line = _one_error_line(in_process("tl.predict", [str(exported["bundle"]), str(exported["data"]), "--out",
                                                         str(roomy), "--gradcam", str(small / "cams")]),
                               f"no --out {roomy} was written")
        assert not roomy.exists(), line

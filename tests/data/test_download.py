"""The MedMNIST download path against a local HTTP server on 127.0.0.1 (``TL_MEDMNIST_URL``):
a good file lands with its MD5 checked, a wrong MD5 leaves no file, a cut-off transfer leaves no
partial file and the next run retries."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import tl.core.tasks
from tl.data import load_dataset, resolve_dataset_path
from tl.core.errors import TLError

ROOT = Path(__file__).resolve().parents[2]


def _npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    arrays = {f"{s}_{k}": (rng.integers(0, 255, (6, 28, 28), dtype=np.uint8) if k == "images"
                           else (np.arange(6) % 2).astype(np.uint8)[:, None])
              for s in ("train", "val", "test") for k in ("images", "labels")}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


PAYLOAD = _npz_bytes()
GOOD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    mode = "good"  # "good": the whole file; "cut": Content-Length of the whole, half the bytes
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        body = PAYLOAD[: len(PAYLOAD) // 2] if self.mode == "cut" else PAYLOAD
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """A local server for MedMNIST files; pneumoniamnist's table MD5 set to the served file's."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.mode, _Handler.requests = "good", []
    monkeypatch.setenv("TL_MEDMNIST_URL", f"http://127.0.0.1:{httpd.server_port}/files")
    info = tl.core.tasks.MEDMNIST["pneumoniamnist"]
    monkeypatch.setitem(tl.core.tasks.MEDMNIST, "pneumoniamnist", dataclasses.replace(info, md5={**info.md5, 28: GOOD_MD5}))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_good_download_lands_with_md5_checked(server, tmp_path):
    path = resolve_dataset_path("pneumoniamnist", tmp_path)
    assert path == tmp_path / "pneumoniamnist.npz" and hashlib.md5(path.read_bytes()).hexdigest() == GOOD_MD5
    assert _Handler.requests == ["/files/pneumoniamnist.npz?download=1"], _Handler.requests
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["pneumoniamnist.npz"]
    assert load_dataset("pneumoniamnist", 28, tmp_path).task == "binary"


def test_md5_mismatch_is_one_error_line_and_leaves_no_file(server, tmp_path, monkeypatch):
    info = tl.core.tasks.MEDMNIST["pneumoniamnist"]
    monkeypatch.setitem(tl.core.tasks.MEDMNIST, "pneumoniamnist", dataclasses.replace(info, md5={**info.md5, 28: "0" * 32}))
    with pytest.raises(TLError, match=f"corrupt: MD5 {GOOD_MD5}, expected 0000"):
        resolve_dataset_path("pneumoniamnist", tmp_path)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")], list(tmp_path.iterdir())


def test_md5_mismatch_via_the_cli_is_one_error_line(server, tmp_path):
    """The same through ``python -m tl.search``: the real MD5 of pneumoniamnist_64 never matches our file."""
    proc = subprocess.run([sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--dataset",
                           "pneumoniamnist_64", "--data-dir", str(tmp_path), "--storage", str(tmp_path / "r"),
                           "--name", "bad"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-1500:]
    assert "pneumoniamnist_64" in errors[0] and "MD5" in errors[0] and "Traceback" not in proc.stderr, errors
    assert not (tmp_path / "pneumoniamnist_64.npz").exists() and not (tmp_path / "r" / "bad").exists()


def test_cut_off_download_leaves_no_partial_file_and_the_next_run_retries(server, tmp_path):
    _Handler.mode = "cut"
    with pytest.raises(TLError, match="could not download pneumoniamnist"):
        resolve_dataset_path("pneumoniamnist", tmp_path)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")], list(tmp_path.iterdir())
    _Handler.mode = "good"
    path = resolve_dataset_path("pneumoniamnist", tmp_path)
    assert hashlib.md5(path.read_bytes()).hexdigest() == GOOD_MD5 and len(_Handler.requests) == 2

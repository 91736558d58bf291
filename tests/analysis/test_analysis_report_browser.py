"""report.html in headless Chromium: it renders, every table is there, no image is broken."""

from __future__ import annotations

import base64
import io
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from analysis_builders import HEALTHY, OVERFIT
from PIL import Image

from analysis.summarize import main

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.headings = 0, [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        self._in_h2 = tag == "h2"
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data.strip())
            self._in_h2 = False


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed: cannot render report.html headless")
    from analysis_builders import ExperimentBuilder

    exp = ExperimentBuilder(tmp_path_factory.mktemp("browser"), "browser")
    exp.trial("abcd0001", HEALTHY, test_acc=0.89, lr=1e-3)
    exp.trial("abcd0002", OVERFIT, test_acc=0.83, freeze="backbone", lr=3e-3)
    exp.trial("abcd0003", HEALTHY, test_acc=0.80, backbone="convmodel", weights="none", lr=1e-2)
    exp.trial("abcd0004", HEALTHY, epochs_run=3, lr=5e-2)
    exp.trial("abcd0005", error="RuntimeError: boom")
    assert main([str(exp.path)]) == 0, "summarize failed"
    return exp.path / "summary" / "report.html"


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, timeout=90)


def test_report_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert shot.is_file(), f"no screenshot: {proc.stderr.decode(errors='replace')[-2000:]}"
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2000), f"window size not honoured: {image.size}"
    low, high = image.getextrema()
    assert high - low > 100 and len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20, \
        "screenshot is (nearly) uniform: page did not render"


def test_report_dom_has_tables_and_valid_embedded_images(report, tmp_path):
    proc = _chromium(tmp_path, "--dump-dom", report.as_uri())
    dom = proc.stdout.decode("utf-8", errors="replace")
    assert "</html>" in dom, f"no DOM dumped: {proc.stderr.decode(errors='replace')[-2000:]}"
    page = _Collector()
    page.feed(dom)
    for heading in ("Table 1: every trial", "Paired comparisons on the test split",
                    "Overfitting diagnostics", "Hyperparameter importance"):
        assert heading in page.headings, f"section {heading!r} missing: {page.headings}"
    assert page.tables >= 7, f"expected every table (>= 7), found {page.tables}"
    assert len(page.images) >= 6, f"expected the figures embedded, found {len(page.images)}"
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), f"not an embedded PNG: {src[:60]}"
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE), "data URI is not a PNG"
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # raises on a truncated or corrupt PNG
            assert min(image.size) > 50, f"suspiciously small figure {image.size}"
    assert "http://" not in dom and "https://" not in dom, "report must not reference the network"

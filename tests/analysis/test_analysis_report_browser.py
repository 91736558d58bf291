"""report.html in headless Chromium: it renders, every table is there, no image is broken."""

from __future__ import annotations

import base64
import html
import io
import json
import re
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


# Measures the rendered page from inside it: what sticks out past the viewport (outside a scrolling
# table box, which clips its own table), and where the recommended model's test figures start.
MEASURE = """<script>
(function () {
  const vw = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.scroll') && !el.classList.contains('scroll')) continue;
    const r = el.getBoundingClientRect();
    if (r.right > vw + 1) out.push(el.tagName + ':' + Math.round(r.right));
  }
  const expected = [...document.querySelectorAll('#recommended-model p')]
    .find(p => p.textContent.includes('expected on new images'));
  document.body.setAttribute('data-measured', JSON.stringify({
    viewport: vw, page_width: document.documentElement.scrollWidth, overflowing: out.slice(0, 10),
    first_section: (document.querySelector('section') || {}).id || '',
    expected_top: expected ? Math.round(expected.getBoundingClientRect().top) : -1,
    expected_text: expected ? expected.textContent : ''}));
})();
</script>"""


def _measured(report_html: Path, tmp_path: Path) -> dict:
    page = tmp_path / "measured.html"
    page.write_text(report_html.read_text().replace("</body>", MEASURE + "</body>"))
    proc = _chromium(tmp_path, "--dump-dom", "--window-size=1280,800", page.as_uri())
    dom = proc.stdout.decode("utf-8", errors="replace")
    found = re.search(r'data-measured="([^"]*)"', dom)
    assert found, f"the page did not measure itself: {proc.stderr.decode(errors='replace')[-1500:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def finalists_report(tmp_path_factory) -> Path:
    """A search whose finalist stage re-trained two recipes over two seeds (recipe 1 wins on mean val)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed: cannot render report.html headless")
    from analysis_builders import ExperimentBuilder, predictions_with_accuracy

    exp = ExperimentBuilder(tmp_path_factory.mktemp("browser_fin"), "with_finalists")
    curve = {**HEALTHY, "val_acc": [v + 0.05 for v in HEALTHY["val_acc"]]}
    exp.trial("5ea00001", curve, test_acc=0.85, lr=1e-3)
    exp.trial("5ea00002", HEALTHY, test_acc=0.84, lr=3e-3, backbone="timm/efficientnet_lite0_with_a_long_name")
    stage = ExperimentBuilder(exp.path, "finalists", meta=False)
    for recipe, source, shift in ((1, "5ea00001", 0.05), (2, "5ea00002", 0.0)):
        for seed in (1, 2):
            stage.trial(f"f1a{recipe}000{seed}", {**HEALTHY, "val_acc": [v + shift for v in HEALTHY["val_acc"]]},
                        test_acc=0.0, predictions=predictions_with_accuracy(0.8 + 0.02 * seed, seed=10 * recipe + seed),
                        seed=seed, stage="finalist", recipe_id=recipe, source_trial=source)
    assert main([str(exp.path)]) == 0, "summarize failed"
    return exp.path / "summary" / "report.html"


@pytest.mark.parametrize("which", ["single pick", "finalists"])
def test_first_screen_is_the_recommended_model_and_nothing_overflows(which, report, finalists_report, tmp_path):
    """Issue 21: at 1280 x 800 the first section is the model tl.export ships, with its expected test
    figures above the fold, and no element sticks out of the viewport (wide tables scroll in their box)."""
    page = finalists_report if which == "finalists" else report
    measured = _measured(page, tmp_path)
    assert measured["viewport"] == 1280 - 0 or measured["viewport"] > 1200, measured
    assert measured["overflowing"] == [] and measured["page_width"] <= measured["viewport"], measured
    assert measured["first_section"] == "recommended-model", measured
    assert 0 < measured["expected_top"] < 800, f"test figures below the first screen: {measured}"
    text = measured["expected_text"]
    assert "acc" in text and "[" in text, f"test figures with intervals expected: {text!r}"
    dom = page.read_text()
    if which == "finalists":
        assert "finalist recipe 1&#x27;s seed ensemble (2 seeds: f1a10001, f1a10002)" in dom, "the winner's seeds"
    else:
        assert "trial abcd0001 (single pick)" in dom

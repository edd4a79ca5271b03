"""The report in a real browser: headless Chromium loads it with no console or load errors, every figure
decodes with sane dimensions, and the rendered page is not blank.

A broken page (a missing PNG, a script error) is opened first to show that the check can fail.
"""

import numpy as np
import pytest
from PIL import Image

from analysis.report import build_report
from tests.analysis.chromium import find_chromium, open_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    binary, why = find_chromium(install=True)
    if binary is None:
        pytest.skip(f"headless Chromium unavailable: {why}")
    return binary


def test_the_check_catches_a_missing_image_and_a_console_error(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>t</title></head><body>'
                    '<img src="missing.png"><script>console.error("boom")</script></body></html>')
    seen = open_page(chromium, page)
    assert any("ERR_FILE_NOT_FOUND" in e and "missing.png" in e for e in seen.errors), seen.errors
    assert any("boom" in e for e in seen.errors), seen.errors
    assert seen.images == [{"src": "missing.png", "complete": True, "width": 0, "height": 0}]


def test_the_report_opens_without_errors_and_shows_its_figures(chromium, tiny_sweep, tmp_path):
    index = build_report([str(tiny_sweep)], tmp_path / "report")
    seen = open_page(chromium, index)
    assert seen.errors == []
    assert seen.title == "decodelab report: tiny"
    files = sorted(p.name for p in index.parent.glob("*.png"))
    assert sorted(i["src"] for i in seen.images) == files and len(files) >= 3
    for image in seen.images:
        width, height = Image.open(index.parent / image["src"]).size
        assert image["complete"] and (image["width"], image["height"]) == (width, height)
        assert 300 <= width <= 3000 and 200 <= height <= 3000
    shot_path = tmp_path / "screenshot.png"
    shot_path.write_bytes(seen.screenshot)
    shot = np.asarray(Image.open(shot_path).convert("L"), dtype=float)
    assert shot.shape[1] == 1280 and shot.shape[0] > 2000  # the whole page: tables and figures
    assert shot.var() > 100  # text, tables and plots, not a blank page

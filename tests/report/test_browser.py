"""The report in a real headless Chromium (Debian's ``chromium``): it loads, every image renders,
and a screenshot is kept. Fails, never skips, when chromium is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.report.browser import Browser, find_chromium
from tests.report.lake import KEPT

# where the screenshot is copied for CI to keep (FLOWLAKE_TEST_ARTEFACTS overrides)
ARTEFACTS = Path(os.environ.get("FLOWLAKE_TEST_ARTEFACTS", "/tmp/flowlake-test-artefacts"))


@pytest.fixture(scope="module")
def browser():
    assert find_chromium(), ("chromium is not installed: `apt-get install -y --no-install-recommends chromium` "
                             "(scripts/setup.sh --all installs it)")
    with Browser() as b:
        yield b


def test_report_loads_and_every_image_renders(report_file, tmp_path, browser):
    browser.open(report_file, width=1400)
    assert browser.evaluate("document.title") == "flowlake report"
    assert browser.evaluate("document.querySelectorAll('section').length") == 6
    images = browser.images()
    assert len(images) >= 10
    broken = [i for i in images if not (i["complete"] and i["naturalWidth"] > 0 and i["naturalHeight"] > 0)]
    assert broken == []
    # no picture is wider than the page at 1400 px
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1400
    shot = browser.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 50_000
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    kept = shutil.copy(shot, ARTEFACTS / "report.png")
    KEPT.append(f"report screenshot at 1400 px: {kept}")


def test_a_broken_image_is_caught(tmp_path, browser):
    # edge case: the check itself: one good 1x1 PNG, one that does not decode, one missing file
    good = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    page = tmp_path / "broken.html"
    page.write_text(f"<html><body><img alt=good src='data:image/png;base64,{good}'>"
                    "<img alt=garbled src='data:image/png;base64,AAAA'><img alt=missing src='nope.png'></body></html>")
    browser.open(page)
    widths = {i["alt"]: i["naturalWidth"] for i in browser.images()}
    assert widths == {"good": 1, "garbled": 0, "missing": 0}

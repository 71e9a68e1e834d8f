"""The real book, read in a real browser: scripts/check_book.py builds it (into a temporary folder) and opens every
page in headless Chromium at 1400 px and 390 px, failing on horizontal overflow of the main column, a figure
without caption or alt text, a console error, a request to a non-local URL, or a missing result.

Skips, saying why, when playwright or Chromium is absent (Debian: `apt-get install chromium`; playwright:
`.venv/bin/pip install -e '.[dev]'`; playwright's own browser download is not needed). About two minutes on two
cores.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def test_book_reads_well_in_chromium_at_desktop_and_phone_widths(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: .venv/bin/pip install -e '.[dev]'")
    pytest.importorskip("jupyter_book", reason="jupyter-book is not installed: .venv/bin/pip install -e '.[study]'")
    import check_book

    if check_book.find_chromium() is None:
        pytest.skip("no Chromium executable (apt-get install chromium, or set $CHROMIUM to its path)")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_book.py"), "--build-to", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800, cwd=REPO)
    report = proc.stdout[-12000:] + proc.stderr[-4000:]
    assert proc.returncode != 2, f"the browser check could not run:\n{report}"
    assert proc.returncode == 0, f"pages that fail in the browser:\n{report}"
    assert "page views pass" in proc.stdout

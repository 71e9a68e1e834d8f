"""Read the built book in a real browser and fail where a reader would be let down.

    .venv/bin/python scripts/check_book.py                      # build the book, then check every page
    .venv/bin/python scripts/check_book.py --no-build           # check book/_build/html as it is
    .venv/bin/python scripts/check_book.py --html DIR           # check another build (e.g. a quick run's book)
    .venv/bin/python scripts/check_book.py --screenshots /tmp/shots --shoot intro.html   # also save screenshots

Every page of the built HTML is served from 127.0.0.1 and opened in headless Chromium at 1400 px and 390 px
wide (a desktop and a phone), with every fold opened (code cells, dropdowns). A page fails on:

- horizontal overflow of the main column: the page wider than the window, an element of the article sticking out
  of it, or a box in it (a table, an output, an equation) whose content is wider than the box and is cut off or
  hidden behind a scroll bar;
- a figure without a caption: an image in the article that is not inside a <figure> with a non-empty
  <figcaption>, or that has no alt text;
- an error in the browser console or an uncaught script error (a missing local file shows up here too);
- a request to any address other than the local server (a CDN, fonts, analytics): the book must read offline;
- a "missing" marker: a number or table the page reads from results/ that the build could not find.

Chromium is taken from --chromium, $CHROMIUM, or the first of chromium / chromium-browser / google-chrome on the
PATH (Debian: `apt-get install chromium`); playwright's own browser download is not needed. Exit status 0 when
every page passes, 1 when one fails, 2 when the check cannot run (no playwright, no Chromium, no build).
"""
from __future__ import annotations

import argparse
import functools
import re
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = {1400: 900, 390: 844}  # viewport width -> height (a desktop window, a phone)
SKIP_PAGES = {"genindex.html", "search.html"}  # Sphinx's generated index and search pages hold no content
TOLERANCE_PX = 2  # sub-pixel rounding

# Measured inside the page: everything that can overflow, and every image without its caption.
MEASURE_JS = r"""
(tol) => {
  const problems = [];
  const vw = document.documentElement.clientWidth;
  const pageWidth = document.documentElement.scrollWidth;
  const main = document.querySelector('main article') || document.querySelector('article')
            || document.querySelector('main') || document.body;
  if (pageWidth > vw + tol) {
    // name the innermost element whose content is wider than the window (often unbreakable text)
    let culprit = null;
    for (const el of document.body.querySelectorAll('*')) {
      if (el.scrollWidth > vw + tol && !Array.from(el.children).some((c) => c.scrollWidth > vw + tol)) culprit = el;
    }
    problems.push(`overflow: the page is ${pageWidth}px wide in a ${vw}px window`
                  + (culprit ? ` (widest content in ${culprit.tagName.toLowerCase()}.${culprit.className}: `
                     + `"${(culprit.innerText || '').replace(/\s+/g, ' ').slice(0, 70)}")` : ''));
  }
  const box = main.getBoundingClientRect();
  const name = (el) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    const cls = (el.getAttribute('class') || '').trim().split(/\s+/).filter(Boolean).slice(0, 3);
    if (cls.length) s += '.' + cls.join('.');
    const text = (el.innerText || el.getAttribute('alt') || '').replace(/\s+/g, ' ').trim().slice(0, 70);
    const where = el.closest('section[id]');
    return s + (where ? ` in section #${where.id}` : '') + (text ? ` ("${text}")` : '');
  };
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return false;
    const cs = getComputedStyle(el);
    return cs.visibility !== 'hidden' && cs.display !== 'none';
  };
  const clips = (cs) => ['auto', 'scroll', 'hidden', 'clip'].includes(cs.overflowX);
  const reported = new Set();
  const insideReported = (el) => { for (const r of reported) if (r.contains(el)) return true; return false; };
  for (const el of main.querySelectorAll('*')) {
    if (!visible(el) || insideReported(el)) continue;
    const cs = getComputedStyle(el);
    if (clips(cs) && el.scrollWidth > el.clientWidth + tol && el.clientWidth > 0) {
      problems.push(`overflow: content ${el.scrollWidth}px wide is cut to ${el.clientWidth}px in ${name(el)}`);
      reported.add(el);
      continue;
    }
    // an element sticking out of the article (not inside a box that clips it: that box is reported above)
    let clipped = false;
    for (let a = el.parentElement; a && a !== main; a = a.parentElement) {
      if (clips(getComputedStyle(a))) { clipped = true; break; }
    }
    if (clipped) continue;
    const r = el.getBoundingClientRect();
    if (r.right > box.right + tol || r.left < box.left - tol) {
      problems.push(`overflow: ${name(el)} spans ${Math.round(r.left)}..${Math.round(r.right)}px, the main `
                    + `column ${Math.round(box.left)}..${Math.round(box.right)}px`);
      reported.add(el);
    }
  }
  for (const img of main.querySelectorAll('img')) {
    if (!visible(img)) continue;
    const fig = img.closest('figure');
    const cap = fig && fig.querySelector('figcaption');
    if (!cap || !cap.innerText.trim()) problems.push(`figure: image without a caption: ${name(img)} (${img.getAttribute('src')})`);
    if (!(img.getAttribute('alt') || '').trim()) problems.push(`figure: image without alt text: ${img.getAttribute('src')}`);
  }
  for (const m of main.querySelectorAll('.study-missing')) {
    problems.push(`missing result: ${name(m)}`);
  }
  return problems;
}
"""
# MathJax keeps an invisible copy of every formula for screen readers (mjx-assistive-mml), positioned absolutely
# and wider than the visible formula; it is taken out of the measurement.
HIDE_ASSISTIVE_CSS = "mjx-assistive-mml { display: none !important; }"


def find_chromium(explicit: str | None = None) -> str | None:
    import os

    for candidate in (explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (shutil.which(candidate) or Path(candidate).is_file()):
            return shutil.which(candidate) or candidate
    return None


def build_book(out: Path | None) -> Path:
    """`jupyter-book build book -W -n --keep-going` (into book/_build, or `out`); returns the HTML folder."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT / "book"), "-W", "-n", "--keep-going"]
    if out is not None:
        cmd += ["--path-output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"the book build failed (exit {proc.returncode}): {' '.join(cmd)}")
    return (out if out is not None else ROOT / "book") / "_build" / "html"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the check reports what matters
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages_of(html: Path) -> list[str]:
    """Every content page (not the redirect that index.html is, nor Sphinx's index and search pages)."""
    skip = ("_static/", "_sources/", "_images/", "_downloads/")
    pages = []
    for p in sorted(html.rglob("*.html")):
        rel = p.relative_to(html).as_posix()
        if rel.startswith(skip) or p.name in SKIP_PAGES:
            continue
        if re.search(r'<meta[^>]+http-equiv="refresh"', p.read_text(encoding="utf8", errors="replace")[:2000], re.I):
            continue  # a redirect to the landing page
        pages.append(rel)
    return pages


def check_page(browser, base: str, page_path: str, width: int, height: int,
               screenshot: Path | None = None) -> list[str]:
    problems: list[str] = []
    local = urlsplit(base).netloc
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = context.new_page()

    def route(r):
        parts = urlsplit(r.request.url)
        if parts.scheme in ("data", "blob", "about") or parts.netloc == local:
            r.continue_()
        else:
            problems.append(f"request: non-local URL {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(f"console: {m.type}: {m.text} ({m.location.get('url') or 'no URL'})")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"console: uncaught error: {e}"))
    page.goto(base + page_path, wait_until="load")
    page.evaluate("""() => Promise.all([
        document.fonts ? document.fonts.ready : null,
        (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : null,
    ]).then(() => true)""")
    page.wait_for_timeout(150)  # MathJax typesets after its promise resolves on some pages
    # a reader may open every fold (code cells, the run settings): what they reveal must fit too
    page.evaluate("() => document.querySelectorAll('main details').forEach((d) => { d.open = true; })")
    page.wait_for_timeout(50)
    page.add_style_tag(content=HIDE_ASSISTIVE_CSS)
    problems += page.evaluate(MEASURE_JS, TOLERANCE_PX)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => document.querySelectorAll('main details').forEach((d) => { d.open = false; })")
        page.screenshot(path=str(screenshot), full_page=False)
        page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-full.png")), full_page=True)
    context.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html", type=Path, help="a built book's HTML folder (default: build book/ first)")
    ap.add_argument("--no-build", action="store_true", help="check book/_build/html as it is")
    ap.add_argument("--build-to", type=Path, help="build into this folder instead of book/_build")
    ap.add_argument("--chromium", help="path of the Chromium executable")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="comma-separated window widths in px")
    ap.add_argument("--pages", nargs="*", help="only these pages (paths relative to the HTML folder)")
    ap.add_argument("--screenshots", type=Path, help="save screenshots of the --shoot pages here")
    ap.add_argument("--shoot", nargs="*", default=["intro.html"], help="pages to screenshot (default: intro.html)")
    args = ap.parse_args(argv)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("cannot check: playwright is not installed (.venv/bin/pip install -e '.[dev]')")
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("cannot check: no Chromium found (apt-get install chromium, or pass --chromium / set $CHROMIUM)")
        return 2
    if args.html:
        html = args.html
    elif args.no_build:
        html = ROOT / "book" / "_build" / "html"
    else:
        html = build_book(args.build_to)
        print(f"built {html}")
    if not (html / "index.html").is_file():
        print(f"cannot check: no built book at {html}")
        return 2

    widths = [int(w) for w in args.widths.split(",") if w]
    pages = args.pages or pages_of(html)
    shoot = set(args.shoot or [])
    server, base = serve(html)
    failures = 0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            for page_path in pages:
                for width in widths:
                    shot = (args.screenshots / f"{Path(page_path).stem}-{width}.png"
                            if args.screenshots and page_path in shoot else None)
                    problems = check_page(browser, base, page_path, width, WIDTHS.get(width, 900), shot)
                    status = "ok" if not problems else f"FAIL ({len(problems)})"
                    print(f"{status:10} {width:>5}px  {page_path}")
                    for p in problems:
                        print(f"           - {p}")
                    failures += bool(problems)
            browser.close()
    finally:
        server.shutdown()
    total = len(pages) * len(widths)
    print(f"\n{total - failures} of {total} page views pass ({len(pages)} pages x widths {widths}); "
          f"Chromium {chromium}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

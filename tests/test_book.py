"""End to end: the book builds offline with warnings as errors, from executed notebooks under results/.

In a temporary copy of the repository's book (book/ with its symlinks, the root _config.yml and the quoted table)
the test writes fixture executed notebooks with a PNG figure and a summary.json where the real ones go
(results/<model>/<notebook>/), executes notebooks/claims_ledger.ipynb on them through papermill (kernel
"python3"; if it is missing: `python -m ipykernel install --sys-prefix`), runs `jupyter-book build <tmp>/book -W
-n --keep-going` and checks the HTML: every chapter shows its figure, the ledger lists C1..C13 and the quoted
numbers, and MathJax is loaded from the book itself, never from a CDN. Takes about a minute on 2 cores.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
CHAPTERS = {  # notebook -> the claims its summary.json carries
    "projection_check": ["C1", "C2", "C5"],
    "edit_count": ["C7", "C11"],
    "metric_definitions": ["C12", "C13"],
    "operating_points": ["C3", "C4", "C5", "P4"],
    "collapse": ["N1"],
}
ACROSS_LABEL = "across-models"  # results/<this>/: the chapters that compare models
ACROSS = {"model_compare": ["C8", "C10"], "instruct_vs_base": ["C9"]}
WHY = {  # notebook -> the questions its summary.json answers beside the verdicts
    "collapse": {"C7": {"question": "Fixture question: does the collapse track | the norm?", "answer": "partly",
                        "evidence": "Fixture why-evidence $y$ <i>."},
                 "calibrated": {"question": "Fixture question about the calibrated P?", "answer": "not testable here",
                                "evidence": "Fixture: 700 of 2000 edits."},
                 "stability": {"question": "Fixture question with answers of its own?", "answer": "cache_c, not P",
                               "answers": ["cache_c, not P", "not testable here"], "evidence": "Fixture ablations.",
                               "edits": 1000}},
}
LEDGER = "claims_ledger"
MATHJAX = "_static/mathjax/es5/tex-chtml.js"


def png_bytes(width: int = 8, height: int = 4, rgb=(200, 60, 30)) -> bytes:
    """A small valid RGB PNG, written by hand (no plotting library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def write_fixture_chapter(results: Path, notebook: str, claims: list[str], model: str = MODEL) -> Path:
    """An executed notebook as papermill leaves it, plus its figure file and summary.json."""
    import nbformat

    out = results / model / notebook
    out.mkdir(parents=True, exist_ok=True)
    png = png_bytes()
    (out / "figure.png").write_bytes(png)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# Fixture chapter {notebook}\n\nA fixture standing in for the real notebook."),
        nbformat.v4.new_code_cell(
            "plt.plot([0, 1])", execution_count=1,
            outputs=[nbformat.v4.new_output(
                "display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"})],
        ),
    ]
    nbformat.write(nb, out / f"{notebook}.ipynb")
    verdicts = ["reproduced", "partly reproduced", "not reproduced", "not testable here"]
    summary = {
        "model": model, "notebook": notebook, "n_edits": 2000, "batch_size": 100, "quick": False,
        "claims": {c: {"verdict": verdicts[i % 4], "evidence": f"Fixture evidence for {c}: 0.5 | 1.5 $x$ <b>."}
                   for i, c in enumerate(claims)},
    }
    if notebook in WHY:
        summary["why"] = WHY[notebook]
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return out


def write_fixture_metrics(results: Path) -> None:
    rows = ["method,edits,family,metric,mean,ci_low,ci_high"]
    for method in ("alphaedit", "memit"):
        for edits in (0, 100, 2000):
            for metric in ("efficacy", "generalization", "specificity"):
                rows.append(f"{method},{edits},official,{metric},0.5,0.4,0.6")
                rows.append(f"{method},{edits},easyedit,{metric},0.7,0.6,0.8")
    (results / MODEL / "edit_count" / "metrics_by_edits.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    pytest.importorskip("papermill")
    pytest.importorskip("jupyter_book")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail("no Jupyter kernel named python3: run `python -m ipykernel install --sys-prefix` in the venv")
    import papermill

    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "book", root / "book", symlinks=True, ignore=shutil.ignore_patterns("_build"))
    shutil.copy2(REPO / "_config.yml", root / "_config.yml")
    results = root / "results"
    (results / "quoted").mkdir(parents=True)
    shutil.copy2(REPO / "results" / "quoted" / "alphaedit_table1.csv", results / "quoted")
    for notebook, claims in CHAPTERS.items():
        write_fixture_chapter(results, notebook, claims)
    for notebook, claims in ACROSS.items():
        write_fixture_chapter(results, notebook, claims, model=ACROSS_LABEL)
    write_fixture_metrics(results)
    other = results / "other-model-c3" / "operating_points"  # a second model's C3 run: it tests C3 only
    other.mkdir(parents=True)
    (other / "summary.json").write_text(json.dumps(dict(
        model="other-model", notebook="operating_points", n_edits=200, quick=False,
        claims={"C3": dict(verdict="partly reproduced", evidence="Second-model C3 evidence."),
                "C4": dict(verdict="not testable here", evidence="No sweep was run on this model.")})))
    assert (root / "book" / "results").is_symlink() and (root / "book" / "results").resolve() == results.resolve()

    ledger = results / MODEL / LEDGER / f"{LEDGER}.ipynb"
    ledger.parent.mkdir(parents=True)
    papermill.execute_notebook(
        str(REPO / "notebooks" / f"{LEDGER}.ipynb"), str(ledger), kernel_name="python3",
        parameters={"results_root": str(results), "model": MODEL}, cwd=str(REPO / "notebooks"), progress_bar=False,
    )

    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root / "book"), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, f"jupyter-book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    html = root / "book" / "_build" / "html"
    assert html.is_dir()
    return html


def images_of(page: Path) -> list[Path]:
    srcs = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', page.read_text(encoding="utf8"))
    return [(page.parent / s).resolve() for s in srcs if "://" not in s and not s.startswith("data:")]


@pytest.mark.parametrize("folder, notebook", [(MODEL, n) for n in CHAPTERS] + [(ACROSS_LABEL, n) for n in ACROSS])
def test_chapter_shows_its_figure(built_book, folder, notebook):
    page = built_book / "results" / folder / notebook / f"{notebook}.html"
    assert page.exists(), f"no page for chapter {notebook}"
    assert f"Fixture chapter {notebook}" in page.read_text(encoding="utf8")
    images = [p for p in images_of(page) if p.parent == (built_book / "_images").resolve()]
    assert images, f"{page.name} shows no figure from _images/"
    assert all(p.is_file() and p.read_bytes().startswith(b"\x89PNG") for p in images)


def test_ledger_lists_every_claim_and_the_quoted_numbers(built_book):
    page = built_book / "results" / MODEL / LEDGER / f"{LEDGER}.html"
    text = page.read_text(encoding="utf8")
    for i in range(1, 14):
        assert re.search(rf"\bC{i}\b", text), f"C{i} missing from the ledger"
    cells = re.findall(r"<td><p>(.*?)</p></td>", text, flags=re.S)  # the rendered tables, not the code
    for i in range(1, 14):
        assert any(re.match(rf"C{i} \w", c) for c in cells), f"C{i} has no row in the ledger"
    assert "quoted" in text and "Published numbers (quoted" in text
    assert "98.90" in cells  # LLaMA3-8B AlphaEdit CounterFact efficacy, quoted
    for i in range(1, 5):
        assert any(re.match(rf"P{i} \w", c) for c in cells), f"P{i} has no row in the ledger"
    assert any(re.match(r"N1 \w", c) for c in cells), "N1 has no row in the ledger"
    # no fixture chapter for C6 (the across-models ones carry C8, C9 and C10); the fixture's edit_count summary
    # has no P1-P3 verdict
    assert cells.count("not tested yet") == 4
    # the questions answered beside the verdicts (collapse: C7's why, the calibrated P), escaped like the evidence
    assert "Questions answered beside the verdicts" in text
    assert "Fixture question: does the collapse track | the norm?" in cells
    assert "Fixture why-evidence $y$ &lt;i&gt;." in cells
    assert "partly" in cells and "Fixture: 700 of 2000 edits." in cells
    assert "cache_c, not P" in cells and "Fixture ablations." in cells  # an answer from the question's own list
    questions = pd.read_csv(built_book.parents[2] / "results" / MODEL / LEDGER / "questions.csv").set_index("about")
    assert questions.loc["stability", "n_edits"] == "1,000" and questions.loc["C7", "n_edits"] == "2,000"
    assert "Fixture evidence for C7: 0.5 | 1.5 $x$ &lt;b&gt;." in cells  # escaped: no math, no column break
    assert "ours" in cells and "quoted" in cells  # the comparison table from metrics_by_edits.csv
    assert "50.0 [40.0, 60.0]" in cells
    # a second model's run adds the rows it tested (C3), not its "not testable here" ones (C4)
    ledger = pd.read_csv(built_book.parents[2] / "results" / MODEL / LEDGER / "ledger.csv")
    assert ledger[ledger.id == "C3"].model.tolist() == [MODEL, "other-model"]
    assert ledger[ledger.id == "C4"].model.tolist() == [MODEL]
    assert "Second-model C3 evidence." in cells


def test_mathjax_is_local(built_book):
    assert (built_book / MATHJAX).is_file()
    assert list((built_book / "_static/mathjax/es5/output/chtml/fonts/woff-v2").glob("*.woff"))
    method = (built_book / "method.html").read_text(encoding="utf8")
    srcs = re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', method)
    mathjax = [s.split("?")[0] for s in srcs if "mathjax" in s.lower()]  # Sphinx appends ?v=<checksum>
    assert mathjax == [MATHJAX], f"MathJax should be loaded once, from the book: {mathjax}"
    assert 'class="math' in method
    for page in built_book.rglob("*.html"):
        text = page.read_text(encoding="utf8")
        scripts = [s.split("?")[0] for s in re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', text)]
        vendored = [s for s in scripts if "mathjax/" in s]
        assert len(vendored) <= 1 and all(s.endswith("mathjax/es5/tex-chtml.js") for s in vendored), (
            f"{page.relative_to(built_book)} loads vendored MathJax files as scripts: {vendored}")
        remote = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]+)"', text)
        assert not remote, f"{page.relative_to(built_book)} loads {remote}"


# --- the landing page, the book's generated blocks and the presentation of the executed notebooks --------------

sys.path.insert(0, str(REPO / "book" / "_ext"))


def test_landing_page_leads_with_the_verdicts(built_book):
    text = (built_book / "intro.html").read_text(encoding="utf8")
    glance, means = text.index('<section id="verdicts-at-a-glance">'), text.index('<section id="what-this-means')
    assert glance < means < text.index('<section id="limits-of-this-setting">')
    table = text[glance:means]
    for claim in [f"C{i}" for i in range(1, 14)] + [f"P{i}" for i in range(1, 5)]:
        assert re.search(rf"<strong>{claim}</strong>", table), f"{claim} has no row in the landing verdict table"
    for verdict in ("reproduced", "partly reproduced", "not reproduced", "not testable here", "not tested yet"):
        assert f"<em>{verdict}</em>" in table  # the fixture's verdicts, read from ledger.csv, and the vocabulary
    assert 'class="reference download' in table  # ledger.csv, downloadable
    counts = re.sub(r"<[^>]+>", "", table)  # the counts sentence: C1-C13 as practitioners', N1 as later work's
    assert "Of the 13 practitioner claims" in counts and "; from later work, N1 " in counts


def test_presentation_changes_metadata_only():
    import nbformat

    import cell_presentation

    for path in sorted((REPO / "results").glob(f"{MODEL}/*/*.ipynb")):
        nb = json.loads(json.dumps(nbformat.read(path, as_version=4)))
        source = cell_presentation.read_source(REPO / "notebooks", path.stem)
        shown = cell_presentation.present(nb, path.stem, source)
        assert [(c["cell_type"], c["source"], c.get("outputs")) for c in shown["cells"]] == \
               [(c["cell_type"], c["source"], c.get("outputs")) for c in nb["cells"]], path
        assert cell_presentation.present(shown, path.stem, source) == shown, f"{path}: not idempotent"
        for cell in shown["cells"]:
            tags = set(cell["metadata"].get("tags", []))
            if tags & {"parameters", "injected-parameters"}:
                assert "remove-cell" in tags, f"{path}: a parameters cell is shown"
            elif cell["cell_type"] == "code":
                assert tags & {"hide-input", "remove-input", "remove-cell"}, f"{path}: code shown unfolded"


def test_a_figure_cell_displays_nothing_but_its_figure():
    """myst-nb wraps every output of a cell with figure metadata in a figure of that name: a cell that also
    displays a table or a sentence gives two targets of one name (a warning, and `-W` fails the book). Such text
    goes in the next cell."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code" and cell.get("metadata", {}).get("mystnb", {}).get("figure"):
                assert "display(" not in "".join(cell["source"]), f"{path.name}, cell {i}: a figure cell displays"


def test_executed_notebooks_carry_their_presentation():
    """scripts/sync_cell_metadata.py has copied the presentation into results/ (run it after executing a notebook)."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "sync_cell_metadata.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, f"run `.venv/bin/python scripts/sync_cell_metadata.py`:\n{proc.stdout}"


def test_a_notebook_papermill_is_still_writing_is_left_alone(tmp_path):
    """A long stream's executed notebook, still being written by papermill (no end time), is skipped: rewriting it
    would race papermill's own saves. The same notebook once finished is checked (and here out of date)."""
    nb = json.loads((REPO / "results" / MODEL / "edit_count" / "edit_count.ipynb").read_text())
    for cell in nb["cells"]:
        cell["metadata"].pop("tags", None)  # the presentation lost: out of date
    path = tmp_path / "edit_count" / "edit_count.ipynb"
    path.parent.mkdir()
    script = [sys.executable, str(REPO / "scripts" / "sync_cell_metadata.py"), "--check", str(path)]
    for end_time, rc in ((None, 0), ("2026-01-01T00:00:00", 1)):
        nb["metadata"]["papermill"]["end_time"] = end_time
        path.write_text(json.dumps(nb))
        proc = subprocess.run(script, capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == rc, proc.stdout + proc.stderr
        assert ("skipped, papermill has not finished it" in proc.stdout) == (end_time is None)


def test_result_role_reads_files_and_reports_what_is_missing(tmp_path):
    import study_results as sr

    model = tmp_path / "results" / MODEL
    (model / "edit_count").mkdir(parents=True)
    (model / "edit_count" / "summary.json").write_text(json.dumps({"n_edits": 2000, "claims": {"C7": {"verdict": "x"}},
                                                                   "layers": [4, 5, 6]}))
    (model / "edit_count" / "diag.csv").write_text(
        "method,batch,layer,edits,seconds\n" + "".join(f"{m},{b},{l},{100 * (b + 1)},{10 * (b + 1)}\n"
                                                       for m in ("a", "b") for b in range(3) for l in (4, 5)))
    ctx = sr.Ctx(book=tmp_path, model_rel=f"results/{MODEL}")
    assert sr.resolve_result(ctx, "edit_count/summary.json | n_edits | int") == ("2,000", True)
    assert sr.resolve_result(ctx, "edit_count/summary.json | claims.C7.verdict") == ("x", True)
    assert sr.resolve_result(ctx, "edit_count/summary.json | layers | range") == ("4–6", True)
    assert sr.resolve_result(ctx, "edit_count/diag.csv | sum(seconds) | method=a, layer=first | raw") == ("60", True)
    assert sr.resolve_result(ctx, "edit_count/diag.csv | seconds | method=b, layer=5, edits=last") == ("30", True)
    assert sr.resolve_result(ctx, "edit_count/diag.csv | count | method=a") == ("6", True)
    assert sr.resolve_result(ctx, "edit_count/none.csv | x")[1] is False
    assert sr.resolve_result(ctx, "edit_count/summary.json | claims.C99")[1] is False
    assert sr.resolve_result(ctx, "edit_count/diag.csv | seconds | method=zzz, layer=4, batch=0")[1] is False
    for bad in ("edit_count/diag.csv", "edit_count/diag.csv | seconds | method=a",
                "edit_count/diag.csv | seconds | | nosuchformat", "edit_count/diag.csv | median(seconds) | "):
        with pytest.raises(sr.ResultError):
            sr.resolve_result(ctx, bad)
    # a paired difference with its interval, and a signed number
    (model / "edit_count" / "paired.csv").write_text("edits,metric,diff,ci_low,ci_high\n100,efficacy,0.07,0.0199,0.12\n"
                                                     "100,locality,-0.081,-0.113,-0.051\n")
    paired = "edit_count/paired.csv | interval | edits=100, metric="
    assert sr.resolve_result(ctx, paired + "efficacy | pts") == ("+7.0 points [+2.0, +12.0]", True)
    assert sr.resolve_result(ctx, paired + "locality | signed") == ("-0.081 [-0.113, -0.051]", True)
    assert sr.resolve_result(ctx, "edit_count/paired.csv | diff | metric=locality | signed") == ("-0.081", True)
    assert sr.resolve_result(ctx, paired + "fluency | pts")[1] is False
    assert sr.resolve_result(ctx, "edit_count/diag.csv | interval | method=a, batch=0, layer=4 | pts")[1] is False
    for bad in (paired + "efficacy | pct", "edit_count/paired.csv | interval | edits=100 | pts"):
        with pytest.raises(sr.ResultError):
            sr.resolve_result(ctx, bad)


def test_provenance_is_recorded_and_shown(tmp_path):
    import time

    import study_results as sr
    from alphaedit_core.study import write_provenance

    out = tmp_path / "results" / MODEL / "projection_check"
    out.mkdir(parents=True)
    path = write_provenance(out, "projection_check", {"n_edits": 7}, time.time() - 2, "completed")
    record = json.loads(path.read_text())
    for key in ("git_commit", "git_dirty", "started_at", "finished_at", "wall_seconds", "parameters", "python",
                "versions", "machine"):
        assert key in record, key
    assert record["parameters"] == {"n_edits": 7} and record["versions"].get("torch")
    nb = {"cells": [], "metadata": {"papermill": {"parameters": {"n_edits": 7}, "duration": 60.0,
                                                  "end_time": "2026-01-01T00:00:00"}}}
    (out / "projection_check.ipynb").write_text(json.dumps(nb))
    ctx = sr.Ctx(book=tmp_path, model_rel=f"results/{MODEL}")
    shown = sr.block_provenance(ctx)
    assert (record["git_commit"] or "")[:10] in shown and "not recorded" not in shown.split("\n")[2]
    assert "min" in sr.block_costs(ctx)


def test_what_we_see_blocks_describe_planted_results(tmp_path):
    """The generated "What we see" paragraphs say what planted tables contain (directions, stretches, ratios)."""
    import study_results as sr

    out = tmp_path / "results" / MODEL / "edit_count"
    out.mkdir(parents=True)
    rows = ["edits,family,prompt_kind,metric,diff,ci_low,ci_high"]
    for e, lo, hi in ((100, 0.02, 0.08), (200, 0.01, 0.05), (500, -0.02, 0.03)):
        rows.append(f"{e},official,rewrite,efficacy,{(lo + hi) / 2},{lo},{hi}")
    for e, lo, hi in ((100, -0.10, -0.06), (200, -0.03, 0.01), (500, 0.01, 0.03)):
        rows.append(f"{e},easyedit,neighborhood,locality,{(lo + hi) / 2},{lo},{hi}")
    (out / "paired_differences.csv").write_text("\n".join(rows) + "\n")
    ctx = sr.Ctx(book=tmp_path, model_rel=f"results/{MODEL}")
    seen = sr.render_block("seen-paired", ctx)
    assert ("**official efficacy**: AlphaEdit higher at 100 and 200 edits (up to +5.0 points [+2.0, +8.0] at 100); "
            "not distinguishable at 500 edits.") in seen
    assert ("**EasyEdit locality**: AlphaEdit lower at 100 edits (up to -8.0 points [-10.0, -6.0] at 100); not "
            "distinguishable at 200 edits; higher at 500 edits (up to +2.0 points [+1.0, +3.0] at 500).") in seen
    assert "higher in 2 and lower in 0 of 3 comparisons" in seen and "higher in 1 and lower in 1 of 3" in seen

    diag = ["method,batch,edits,layer,relative_change,condition,drift,residual_left"]
    for m, w, d, c, r in (("alphaedit", 0.6, 0.3, 500.0, 0.2), ("memit", 0.2, 0.1, 1000.0, 0.5)):
        for b, e in ((0, 100), (1, 200)):
            for layer in (4, 5):
                diag.append(f"{m},{b},{e},{layer},{w * (b + 1) * (layer - 3)},{c * (b + 1)},{d * (b + 1)},{r}")
    (out / "diagnostics.csv").write_text("\n".join(diag) + "\n")
    (out / "summary.json").write_text(json.dumps({"milestones": [100, 200]}))
    seen = sr.render_block("seen-diagnostics", ctx)
    assert "After 200 edits AlphaEdit's weights have moved further than MEMIT's" in seen
    assert "‖W − W⁰‖/‖W⁰‖ is 2.400 against 0.800 (×3.0" in seen and "drifted ×3.0 as far" in seen
    assert "goes from 500 at 100 edits to 1,000" in seen and "leaves 20% of the residual" in seen
    assert "different points of one trade-off" in seen  # 30 points apart
    (out / "diagnostics.csv").write_text("\n".join(d.replace(",0.5", ",0.25") for d in diag) + "\n")  # MEMIT 25%
    assert "different points" not in sr.render_block("seen-diagnostics", ctx)  # 5 points apart: no claim

    ppl = ["method,edits,corpus,perplexity"] + [f"{m},0,fortunes,40.0" for m in ("alphaedit", "memit")] + \
          ["alphaedit,200,fortunes,60.0", "memit,200,fortunes,44.0"]
    (out / "perplexity.csv").write_text("\n".join(ppl) + "\n")
    seen = sr.render_block("seen-capability", ctx)
    assert "fortunes ×1.50 (AlphaEdit) and ×1.10 (MEMIT) of the unedited model's 40.0" in seen
    assert "Paired over the same text windows" not in seen  # no paired table: no sentence about it
    # log ratios: 0.2 [0.1, 0.3] → ×1.22 [1.11, 1.35]; 0.0 [-0.1, 0.1]; -0.5 [-0.9, -0.2] → ×0.61 [0.41, 0.82]
    (out / "paired_capability.csv").write_text(
        "prompt_kind,metric,comparison,edits,diff,ci_low,ci_high\n"
        "fortunes,,alphaedit - memit,100,0.2,0.1,0.3\nfortunes,,alphaedit - memit,200,0.1,0.05,0.2\n"
        "fortunes,,alphaedit - memit,500,0.0,-0.1,0.1\nfortunes,,alphaedit - memit,1000,-0.5,-0.9,-0.2\n"
        "fortunes,,alphaedit - unedited,1000,0.9,0.8,1.0\n,layer 8,alphaedit - memit,1000,0.3,0.2,0.4\n")
    seen = sr.render_block("seen-capability", ctx)
    assert ("AlphaEdit's perplexity against MEMIT's is on fortunes higher at 100 and 200 edits (up to ×1.22 [1.11, "
            "1.35] at 100); not distinguishable at 500 edits; lower at 1,000 edits (up to ×0.61 [0.41, 0.82] at "
            "1,000).") in seen


def test_what_we_see_blocks_of_the_projector_the_definitions_and_the_accuracy(tmp_path):
    import study_results as sr

    model = tmp_path / "results" / MODEL
    for d in ("projection_check", "metric_definitions", "edit_count"):
        (model / d).mkdir(parents=True)
    (model / "projection_check" / "projection.csv").write_text(
        "layer,kept_share,energy_kept,ratio_heldout_mean,ratio_edit_keys_mean,ratio_random_mean\n"
        "5,0.6,0.2,0.4,0.8,0.9\n4,0.8,0.4,0.6,0.8,0.95\n")
    (model / "projection_check" / "threshold_sweep.csv").write_text(
        "layer,threshold,kept_share,ratio_heldout_mean\n" + "".join(
            f"{l},{t},{k},{r}\n" for l in (4, 5) for t, k, r in ((0.001, 0.0, 0.0), (0.002, 0.01, 0.05),
                                                                 (0.02, 0.7, 0.5))))
    ctx = sr.Ctx(book=tmp_path, model_rel=f"results/{MODEL}")
    seen = sr.render_block("seen-projector", ctx)
    assert "From layer 4 to layer 5 P keeps 80% to 60% of the directions, holding 40% to 20%" in seen
    assert "keeps 62% as much of its norm" in seen  # 0.5 / 0.8
    assert "largest threshold whose leak stays under 0.1 is 0.002; it keeps 1.0% of the directions" in seen

    (model / "metric_definitions" / "gaps.csv").write_text(
        "choice,quantity,gap,abs_gap\n"
        "P(true)>P(new) vs argmax unchanged,locality,0.4,0.4\n"
        "partial credit vs all tokens right,edit success,-0.1,0.1\n"
        "generation: contains vs exact match of the first answer span,edit success,0.7,0.7\n"
        "right after the batch vs after the sequence,locality,0.05,0.05\n")
    seen = sr.render_block("seen-gaps", ctx)
    assert "between two frameworks, 40.0% (P(true)\\>P(new) vs argmax unchanged, locality)" in seen
    assert "within one framework, 70.0%" in seen and "after the sequence, 5.0%" in seen

    (model / "edit_count" / "metrics_by_edits.csv").write_text(
        "method,edits,family,prompt_kind,metric,mean\n" + "".join(
            f"{m},{e},official,rewrite,efficacy,{v}\n"
            for m, vals in (("alphaedit", (0.1, 0.99, 0.9)), ("memit", (0.1, 0.9, 0.6)))
            for e, v in zip((0, 100, 500), vals)))
    seen = sr.render_block("seen-accuracy", ctx)
    assert "from the first milestone (100 edits) to the last (500)" in seen
    assert "**official efficacy**: AlphaEdit 99% → 90%, MEMIT 90% → 60% (unedited 10%)." in seen


def test_what_this_means_says_whether_preservation_is_better_and_whether_the_edits_collapsed(tmp_path):
    import study_results as sr

    out = tmp_path / "results" / MODEL / "edit_count"
    out.mkdir(parents=True)
    rows = ["method,edits,family,prompt_kind,metric,mean,ci_low,ci_high"]
    for m, eff, rw in (("alphaedit", (0.99, 0.95), (0.9, 0.7)), ("memit", (0.9, 0.8), (0.8, 0.5))):
        for e, a, b in zip((100, 500), eff, rw):
            rows += [f"{m},{e},official,rewrite,efficacy,{a},{a - 0.01},{a + 0.01}",
                     f"{m},{e},easyedit,rewrite,rewrite_acc,{b},{b - 0.01},{b + 0.01}"]
    (out / "metrics_by_edits.csv").write_text("\n".join(rows) + "\n")
    (out / "onsets.csv").write_text("method,measure,first,drop,collapse,last\n"
                                    "alphaedit,easyedit: rewrite_acc,100,500,,500\n"
                                    "memit,easyedit: rewrite_acc,100,500,,500\n")
    (out / "paired_differences.csv").write_text(
        "edits,family,prompt_kind,metric,diff,ci_low,ci_high\n"
        "100,official,neighborhood,specificity,-0.04,-0.06,-0.02\n500,easyedit,neighborhood,locality,0.0,-0.02,0.02\n")
    ctx = sr.Ctx(book=tmp_path, model_rel=f"results/{MODEL}")
    text = sr.render_block("what-this-means", ctx)
    assert "stayed above half its first-milestone value through 500 edits for both methods" in text
    assert "higher than MEMIT's in 0 and lower in 1 of 2 milestone comparisons" in text
    assert "largest deficit -4.0 points [-6.0, -2.0], specificity at 100 edits" in text
    assert "does not appear in this stream" in text
    (out / "paired_differences.csv").write_text(
        "edits,family,prompt_kind,metric,diff,ci_low,ci_high\n100,official,neighborhood,specificity,0.04,0.02,0.06\n")
    text = sr.render_block("what-this-means", ctx)
    assert "higher than MEMIT's in 1 and lower in 0 of 1" in text
    assert "does not appear" not in text and "largest deficit" not in text
    (out / "onsets.csv").write_text("method,measure,first,drop,collapse,last\n"
                                    "alphaedit,easyedit: rewrite_acc,100,500,,500\n"
                                    "memit,easyedit: rewrite_acc,100,500,500,500\n")
    text = sr.render_block("what-this-means", ctx)
    assert ("EasyEdit rewrite_acc: MEMIT's fell below half its first-milestone value at 500 edits; AlphaEdit's "
            "stayed above half of it through 500 edits: AlphaEdit postpones that collapse beyond the stream so far."
            ) in text


def test_costs_count_the_collapse_streams_but_not_the_plain_streams_it_reuses(tmp_path):
    import study_results as sr

    out = tmp_path / "results" / MODEL / "collapse"
    out.mkdir(parents=True)
    nb = {"cells": [], "metadata": {"papermill": {"parameters": {}, "duration": 30.0,
                                                  "end_time": "2026-01-01T00:00:00"}}}
    (out / "collapse.ipynb").write_text(json.dumps(nb))
    # two layers per batch (one row each): each batch is counted once, 600 s + 1,200 s
    rows = ["stream,batch,layer,seconds"]
    for stream, seconds in (("alphaedit", 5000), ("memit", 5000), ("calibrated", 600), ("calibrated", 1200)):
        batch = 1 if seconds == 1200 else 0
        rows += [f"{stream},{batch},4,{seconds}", f"{stream},{batch},5,{seconds}"]
    (out / "diagnostics.csv").write_text("\n".join(rows) + "\n")
    ctx = sr.Ctx(book=tmp_path, model_rel=f"results/{MODEL}")
    shown = sr.block_costs(ctx)
    assert "calibrated: editing 30 min in 2 batches (15 min per batch, 10–20)" in shown
    assert "AlphaEdit: editing" not in shown and "MEMIT: editing" not in shown


def test_landing_table_names_the_other_runs_of_a_claim(tmp_path):
    """A claim tested on a second model (C3) or by a second notebook (C5) shows that run's verdict beside the first."""
    import study_results as sr

    for name in ("claims.csv", "paper_claims.csv"):
        shutil.copy2(REPO / "book" / name, tmp_path / name)
    folder = tmp_path / "results" / MODEL / "claims_ledger"
    folder.mkdir(parents=True)
    rows = [("C3", "partly reproduced", MODEL, 200, "operating_points"),
            ("C3", "not reproduced", "other-model", 200, "operating_points"),
            ("C5", "partly reproduced", MODEL, 200, "operating_points"),
            ("C5", "reproduced", MODEL, 20, "projection_check")]
    pd.DataFrame([dict(id=i, title=i, verdict=v, evidence="e", model=m, n_edits=n, notebook=nb, run="full")
                  for i, v, m, n, nb in rows]).to_csv(folder / "ledger.csv", index=False)
    block = sr.block_verdicts(sr.Ctx(book=tmp_path, model_rel=f"results/{MODEL}"))  # markdown
    text = block.replace("\\", "").replace("*", "")
    assert "Also on other-model, 200 edits: not reproduced" in text
    assert "Also projection_check on the same model, 20 edits: reproduced" in text
    assert text.count("Also") == 2

"""Read the study's results and write them as MyST Markdown for the book.

Every number the book's own pages show comes through this module, from a file under `results/` (or the pinned
versions in pyproject.toml); nothing here is typed by hand. Each block is a function `block_<name>(ctx)` that
returns Markdown; `study_book.py` renders it where a page says

    ```{study} <name>
    ```

and where the chapters' cells are tagged `study-after-<name>` (see cell_presentation.py). Inline numbers in prose
come from the `{result}` role (see `resolve_result`). A result that is missing renders as a visible "missing"
marker instead of failing the build, so the book still builds from a partial or fixture set of results;
scripts/check_book.py fails on any such marker in a real build.

Pure Python (pandas, json); it imports nothing from Sphinx, so it is unit-testable.
"""
from __future__ import annotations

import ast
import json
import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CHAPTERS = ("projection_check", "edit_count", "metric_definitions", "operating_points", "collapse")
LEDGER = "claims_ledger"
CHAPTER_TITLES = {
    "projection_check": "The projector P",
    "edit_count": "How many sequential edits",
    "metric_definitions": "Every metric definition",
    "operating_points": "Operating points",
    "collapse": "Why the stream collapses",
    "claims_ledger": "Claims ledger",
}
# One vocabulary for every verdict in the book: the notebooks' and the ledger's words, defined once.
VOCABULARY = [
    ("reproduced", "the experiment described for the claim was run and the claim held, as its decision rule "
                   "states."),
    ("partly reproduced", "the experiment was run and only part of the claim held."),
    ("not reproduced", "the experiment was run and the claim did not hold."),
    ("not testable here", "an experiment ran, but in this setting it cannot decide the claim (e.g. the edit "
                          "stream has not yet reached the number of edits the claim is about)."),
    ("not tested yet", "no experiment in this study decides the claim; the reason says whether one is possible "
                       "in this setting (\"Not testable here: ...\") or has simply not been run (\"No notebook "
                       "yet: ...\")."),
]
HPARAM_MEANING = {
    "layers": "edited layers (MLP output projection)",
    "v_lr": "learning rate of the target-vector optimisation",
    "v_num_grad_steps": "maximum optimisation steps per target",
    "v_loss_layer": "layer whose output gives the target loss (-1: the last)",
    "v_weight_decay": "weight of the norm penalty on the target shift",
    "clamp_norm_factor": "bound on the target shift, relative to the hidden state's norm",
    "kl_factor": "weight of the KL term that keeps the subject's meaning",
    "early_stop_loss": "stop optimising a target below this loss",
    "fact_token": "token at which the target vector is read",
    "context_template_length": "tokens per generated context template",
    "context_template_count": "generated context templates per seed word set",
    "context_template_seeds": "first words of the generated context templates",
    "L2": "L2 regularisation of the AlphaEdit update",
    "nullspace_threshold": "absolute eigenvalue threshold for the null-space projector",
    "nullspace_mode": "how the projector's directions are chosen",
    "nullspace_energy": "share of the covariance trace kept in energy mode",
    "mom2_update_weight": "MEMIT's weight on the preserved-knowledge covariance",
    "mom2_corpus": "corpus of the covariance statistics",
    "mom2_n_tokens": "tokens of the covariance statistics",
    "mom2_seq_len": "sequence length when streaming the corpus",
    "mom2_dtype": "precision of the covariance statistics",
    "batch_size": "edits per batch (the preset's default; the chapter's parameter wins)",
    "seed": "random seed",
    "targets_chunk": "requests optimised together (speed only)",
}
# gaps.csv rows of the metric_definitions notebook: is a gap between two frameworks' metrics, or within one?
GAP_KIND = {
    "teacher forcing vs free generation (contains)": "between frameworks (EasyEdit vs generation)",
    "partial credit vs all tokens right": "between frameworks (EasyEdit vs official)",
    "probability comparison vs token accuracy": "between frameworks (official vs EasyEdit)",
    "P(true)>P(new) vs argmax unchanged": "between frameworks (official vs EasyEdit)",
    "generation: contains vs exact match of the first answer span": "within one framework (two parsings of the "
                                                                     "same generated answer)",
    "probability comparison vs all tokens right": "within one framework (two official metrics)",
    "right after the batch vs after the sequence": "timing (same metric, scored at another time)",
}
MEASURES = [  # (family, prompt_kind, metric, short label) shown in the edit-count tables
    ("official", "rewrite", "efficacy", "official efficacy"),
    ("official", "paraphrase", "generalization", "official generalisation"),
    ("official", "neighborhood", "specificity", "official specificity"),
    ("easyedit", "rewrite", "rewrite_acc", "EasyEdit rewrite_acc"),
    ("easyedit", "paraphrase", "rephrase_acc", "EasyEdit rephrase_acc"),
    ("easyedit", "neighborhood", "locality", "EasyEdit locality"),
    ("generation", "rewrite", "exact_match", "generation exact match"),
]


# --------------------------------------------------------------------------------------------------- markdown

def esc(text) -> str:
    """Data as Markdown text: no markup, no math, no column breaks."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    s = " ".join(str(text).split())
    for ch in "\\`*_[]<>|$~{}":
        s = s.replace(ch, "\\" + ch)
    return s


def code(text) -> str:
    """Data as inline code (backslash escapes are literal in code spans; only a table's pipes need escaping)."""
    s = " ".join(str(text).split()).replace("`", "'").replace("|", "\\|")
    return f"`{s}`" if s else ""


def table(header: list[str], rows: list[list[str]], classes: str = "") -> str:
    """A Markdown table (cells are Markdown already: escape data with esc())."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("\n", " ") for c in row) + " |" for row in rows]
    body = "\n".join(lines)
    if classes:
        return f":::{{table}}\n:class: {classes}\n\n{body}\n:::\n"
    return body + "\n"


def missing(what: str) -> str:
    """A visible marker for a result the page expects but cannot find (scripts/check_book.py fails on it)."""
    return "{study-missing}`" + what.replace("`", "'") + "`"


def pct(x, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.{digits}f}%"


def num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    x = float(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** -digits):
        return f"{x:.{max(1, digits - 1)}e}"
    return f"{x:,.{digits}f}"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def label(method: str) -> str:
    return {"alphaedit": "AlphaEdit", "memit": "MEMIT"}.get(str(method), str(method))


# ---------------------------------------------------------------------------------------------------- context

_FIGURES_CACHE: dict = {}  # the figures of the chapters, by the files they were read from (and their mtimes)

@dataclass
class Ctx:
    """Where the results are. `book` is the book's source folder; `model_rel` the results folder of the model the
    book shows, relative to it (e.g. results/smollm2-135m-instruct), so links can be written as /model_rel/..."""
    book: Path
    model_rel: str
    docdir: str = ""  # folder of the page being written, relative to `book` (for messages only)
    deps: set = field(default_factory=set)

    @property
    def model_dir(self) -> Path:
        return self.book / self.model_rel

    @property
    def model(self) -> str:
        return Path(self.model_rel).name

    @property
    def results_root(self) -> Path:
        """The results/ folder (the parent of the model folders; results/quick/<model> sits inside it)."""
        d = self.model_dir.resolve()
        for p in (d, *d.parents):
            if (p / "quoted").is_dir():
                return p
        return d.parent

    def path(self, rel: str) -> Path:
        return self.model_dir / rel

    def _note(self, p: Path) -> Path:
        self.deps.add(str(p))
        return p

    def csv(self, rel: str) -> pd.DataFrame | None:
        p = self._note(self.path(rel))
        return pd.read_csv(p) if p.is_file() else None

    def json(self, rel: str) -> dict | None:
        p = self._note(self.path(rel))
        return json.loads(p.read_text()) if p.is_file() else None

    def notebook(self, name: str) -> dict | None:
        return self.json(f"{name}/{name}.ipynb")

    def book_csv(self, name: str) -> pd.DataFrame | None:
        p = self._note(self.book / name)
        return pd.read_csv(p, dtype=str, keep_default_na=False) if p.is_file() else None

    def quoted(self) -> pd.DataFrame | None:
        p = self._note(self.results_root / "quoted" / "alphaedit_table1.csv")
        return pd.read_csv(p) if p.is_file() else None

    def download(self, rel: str, text: str | None = None) -> str:
        """A {download} link to a results file (copied into the built site)."""
        if not self.path(rel).is_file():
            return missing(f"no {self.model_rel}/{rel}")
        return "{download}`" + (text or Path(rel).name) + " </" + self.model_rel + "/" + rel + ">`"

    def chapter(self, name: str, text: str | None = None) -> str:
        if not self.path(f"{name}/{name}.ipynb").is_file():
            return esc(text or name)
        return "{doc}`" + (text or CHAPTER_TITLES.get(name, name)) + " </" + self.model_rel + f"/{name}/{name}>`"

    def figures(self) -> dict[str, str]:
        """Every numbered figure of the chapters, as the book presents them: {name: chapter}."""
        import cell_presentation

        files = [self.path(f"{c}/{c}.ipynb") for c in CHAPTERS] + \
                [self.book.parent / "notebooks" / f"{c}.py" for c in CHAPTERS]
        for f in files:
            self.deps.add(str(f))
        key = tuple((str(f), f.stat().st_mtime_ns if f.is_file() else None) for f in files)
        if key in _FIGURES_CACHE:
            return _FIGURES_CACHE[key]
        out = {}
        for chapter in CHAPTERS:
            nb = self.notebook(chapter)
            if nb is None:
                continue
            source = None
            try:
                source = cell_presentation.read_source(self.book.parent / "notebooks", chapter)
            except Exception:  # the book still builds when a source notebook cannot be read
                pass
            for cell in cell_presentation.present(nb, chapter, source).get("cells", []):
                name = (cell.get("metadata", {}).get("mystnb", {}).get("figure") or {}).get("name")
                if name:
                    out[name] = chapter
        _FIGURES_CACHE[key] = out
        return out

    def figure(self, name: str) -> str:
        """A numbered reference to a chapter figure, or "" when no chapter of this build has it."""
        return "{figref}`" + name + "`" if name in self.figures() else ""


def verdict_rules() -> dict:
    """The thresholds of alphaedit_core/verdicts.py (None where the package is not importable)."""
    try:
        from alphaedit_core import verdicts
    except Exception:  # the book can build without the package (e.g. a copy of book/ and results/ only)
        return {}
    return {"stable": verdicts.STABLE, "drop": verdicts.DROP, "collapse": verdicts.COLLAPSE, "long": verdicts.LONG}


# ------------------------------------------------------------------------------------------ notebook readers

def parameters(nb: dict) -> dict:
    """The parameters a notebook ran with: its parameters cell, overridden by papermill's injected cell."""
    out: dict = {}
    for tag in ("parameters", "injected-parameters"):
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code" or tag not in cell.get("metadata", {}).get("tags", []):
                continue
            try:
                tree = ast.parse("".join(cell["source"]))
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except (ValueError, SyntaxError):
                        out[node.targets[0].id] = ast.unparse(node.value)
    return out


def printed_hparams(nb: dict) -> dict | None:
    """The hyperparameters a notebook printed (`hyperparameters: {json}`), or None."""
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            if o.get("output_type") != "stream":
                continue
            for line in "".join(o.get("text", "")).splitlines():
                if line.startswith("hyperparameters: "):
                    try:
                        return json.loads(line[len("hyperparameters: "):])
                    except json.JSONDecodeError:
                        return None
    return None


def papermill_run(nb: dict) -> dict:
    return nb.get("metadata", {}).get("papermill", {}) or {}


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}={fmt_value(x)}" for k, x in v.items()) or "none"
    if v is None:
        return "None"
    return str(v)


# ----------------------------------------------------------------------------------------------- the ledger

def ledger(ctx: Ctx) -> pd.DataFrame | None:
    df = ctx.csv(f"{LEDGER}/ledger.csv")
    if df is None:
        return None
    df = df.fillna("")
    df["first"] = ~df["id"].duplicated()
    return df


def claim_texts(ctx: Ctx) -> pd.DataFrame:
    frames = [f for f in (ctx.book_csv("claims.csv"), ctx.book_csv("paper_claims.csv")) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "title", "statement"])


def summaries(ctx: Ctx) -> dict[str, dict]:
    out = {}
    for name in CHAPTERS:
        s = ctx.json(f"{name}/summary.json")
        if s is not None:
            out[name] = s
    return out


def fill(text: str, values: dict) -> str:
    """`{name}` placeholders of a claims.csv text, from results and verdict rules; unknown ones stay visible."""
    def sub(m):
        v = values.get(m.group(1))
        return m.group(0) if v is None else str(v)
    return re.sub(r"\{([a-z0-9_]+)\}", sub, text)


def placeholder_values(ctx: Ctx, row: dict | None = None) -> dict:
    rules = verdict_rules()
    values = {}
    if rules:
        values.update(drop_points=f"{100 * rules['drop']:.0f} points", long_edits=f"{rules['long']:,}",
                      collapse_share=f"{rules['collapse']:.0%}", stable_share=f"{rules['stable']:.0%}")
    else:
        values.update(drop_points="the drop threshold of verdicts.py", long_edits="the long-run threshold of "
                      "verdicts.py", collapse_share="the collapse share of verdicts.py",
                      stable_share="the stability threshold of verdicts.py")
    ec = ctx.json("edit_count/summary.json") or {}
    values.update(stream_edits=f"{ec['n_edits']:,}" if "n_edits" in ec else "(not run)",
                  stream_batch=str(ec.get("batch_size", "(not run)")))
    if row is not None and row.get("n_edits"):
        values["n_edits"] = str(row["n_edits"])
    gaps = gap_summary(ctx)
    if gaps:
        values["c13_gaps"] = gaps
    return values


def gap_summary(ctx: Ctx) -> str:
    """What C13's 'up to' compares: the largest gap between frameworks and the largest overall, with its kind."""
    gaps = ctx.csv("metric_definitions/gaps.csv")
    if gaps is None or gaps.empty or "choice" not in gaps:
        return ""
    gaps = gaps.assign(kind=gaps["choice"].map(GAP_KIND).fillna("unclassified"))
    top = gaps.loc[gaps["abs_gap"].idxmax()]
    between = gaps[gaps["kind"].str.startswith("between")]
    parts = []
    if len(between):
        b = between.loc[between["abs_gap"].idxmax()]
        parts.append(f"largest gap between two frameworks' definitions: {pct(b['abs_gap'])} ({esc(b['choice'])}, "
                     f"{esc(b['quantity'])})")
    parts.append(f"largest gap of all: {pct(top['abs_gap'])} ({esc(top['choice'])}, {esc(top['quantity'])}), "
                 f"{esc(top['kind'])}")
    return "; ".join(parts)


def where(ctx: Ctx, claim: dict) -> str:
    cells = []
    if claim.get("notebook"):
        cells.append(ctx.chapter(claim["notebook"]))
    for fig in [f for f in str(claim.get("figures", "")).split() if f]:
        ref = ctx.figure(fig)
        if ref:
            cells.append(ref)
    return ", ".join(c for c in cells if c)


def paper_ids(ctx: Ctx) -> set[str]:
    paper = ctx.book_csv("paper_claims.csv")
    return set() if paper is None else set(paper["id"])


def block_verdict_counts(ctx: Ctx) -> str:
    lg = ledger(ctx)
    if lg is None:
        return missing(f"no {ctx.model_rel}/{LEDGER}/ledger.csv: run the claims_ledger notebook") + "\n"
    lg = lg[lg["first"] & ~lg["id"].isin(paper_ids(ctx))]

    def words(rows) -> str:
        counts = rows["verdict"].value_counts()
        order = [v for v, _ in VOCABULARY] + sorted(set(counts.index) - {v for v, _ in VOCABULARY})
        return ", ".join(f"**{counts[v]}** {esc(v)}" for v in order if v in counts)

    ours = lg["id"].str.startswith("C")  # the practitioners' C1-C13; the rest (N1) comes from later work
    practitioners, later = lg[ours], lg[~ours]
    models = sorted({m for m in lg["model"] if m})
    return (f"Of the {len(practitioners)} practitioner claims, {words(practitioners)}"
            + ("; from later work, " + ", ".join(f"{esc(i)} *{esc(v)}*" for i, v in zip(later["id"], later["verdict"]))
               if len(later) else "")
            + f" (read from {ctx.download(f'{LEDGER}/ledger.csv', 'ledger.csv')}; models: "
            f"{esc(', '.join(models)) or 'none'}).\n")


def block_verdicts(ctx: Ctx) -> str:
    """The landing table: every C claim, its verdict, what exactly was tested, and where."""
    lg = ledger(ctx)
    if lg is None:
        return missing(f"no {ctx.model_rel}/{LEDGER}/ledger.csv") + "\n"
    texts = {r["id"]: r for r in claim_texts(ctx).to_dict("records")}
    rows = []
    also = lg[~lg["first"] & lg["model"].astype(bool)]  # the same claim tested on another model (e.g. C3)
    for r in lg[lg["first"] & ~lg["id"].isin(paper_ids(ctx))].to_dict("records"):
        t = texts.get(r["id"], {})
        tested = fill(t.get("tested", ""), placeholder_values(ctx, r)) or esc(r.get("evidence", ""))
        run = ""
        if r.get("model"):
            run = f" *Run:* {esc(r['model'])}, {esc(r['n_edits'] or 'no')} edits ({esc(r['run'])})."
        for o in also[also["id"] == r["id"]].to_dict("records"):
            what = (f"{esc(o['notebook'])} on the same model" if o["model"] == r.get("model")
                    else f"on {esc(o['model'])}")
            run += f" *Also* {what}, {esc(o['n_edits'] or 'no')} edits: *{esc(o['verdict'])}*."
        place = where(ctx, {**t, "notebook": r.get("notebook") or t.get("notebook", "")})
        rows.append([f"**{esc(r['id'])}** {esc(r['title'])}", f"*{esc(r['verdict'])}*",
                     tested + run + (f" See {place}." if place else "")])
    return table(["Claim", "Verdict", "What exactly was tested"], rows, classes="study-verdicts study-cards")


def block_paper_verdicts(ctx: Ctx) -> str:
    """P1-P4: the paper's own claims. A verdict comes from a summary.json that carries the claim id, else none."""
    paper = ctx.book_csv("paper_claims.csv")
    if paper is None:
        return missing("no book/paper_claims.csv") + "\n"
    found = {}
    lg = ledger(ctx)
    if lg is not None:  # the ledger's verdict first (once the ledger lists P claims), else a chapter's summary.json
        for r in lg[lg["first"]].to_dict("records"):
            if r["verdict"] != "not tested yet":
                found[r["id"]] = {"verdict": r["verdict"], "evidence": r["evidence"]}
    for name, s in summaries(ctx).items():
        for cid, c in s.get("claims", {}).items():
            found.setdefault(cid, c)
    values = placeholder_values(ctx)
    rows = []
    for p in paper.to_dict("records"):
        if p["id"] in found:
            c = found[p["id"]]
            verdict, tested = c.get("verdict", ""), esc(c.get("evidence", ""))
        else:
            verdict, tested = "not tested yet", fill(p.get("tested", ""), values)
        place = where(ctx, p)
        rows.append([f"**{esc(p['id'])}** {esc(p['title'])}", f"*{esc(verdict)}*",
                     tested + (f" See {place}." if place else "")])
    return table(["Claim", "Verdict", "What exactly was tested"], rows, classes="study-verdicts study-cards")


def block_vocabulary(ctx: Ctx) -> str:
    return "\n".join(f"- *{esc(v)}*: {esc(d)}" for v, d in VOCABULARY) + "\n"


def block_claims(ctx: Ctx) -> str:
    """The statements of every claim (scope page)."""
    texts = claim_texts(ctx)
    rows = [[f"**{esc(r['id'])}** {esc(r['title'])}", esc(r["statement"])] for r in texts.to_dict("records")]
    return table(["Claim", "Statement"], rows)


def block_not_tested(ctx: Ctx) -> str:
    lg = ledger(ctx)
    if lg is None:
        return missing(f"no {ctx.model_rel}/{LEDGER}/ledger.csv") + "\n"
    rows = lg[lg["first"] & (lg["verdict"] == "not tested yet")]
    if rows.empty:
        return "Every practitioner claim has an experiment.\n"
    return "\n".join(f"- **{esc(r['id'])} {esc(r['title'])}** (*not tested yet*): {esc(r['evidence'])}"
                     for r in rows.to_dict("records")) + "\n"


# ------------------------------------------------------------------------------------- chapter-level blocks

def block_chapter_verdicts(ctx: Ctx, chapter: str) -> str:
    s = ctx.json(f"{chapter}/summary.json")
    if s is None:
        return missing(f"no {ctx.model_rel}/{chapter}/summary.json") + "\n"
    rows = [[f"**{esc(cid)}**", f"*{esc(c.get('verdict', ''))}*", esc(c.get("evidence", ""))]
            for cid, c in s.get("claims", {}).items()]
    return (table(["Claim", "Verdict", "Evidence (the notebook's own summary of its numbers)"], rows,
                  classes="study-verdicts study-cards")
            + f"\nSource: {ctx.download(f'{chapter}/summary.json')}; every verdict in the book is defined in "
              f"the {{doc}}`landing page's vocabulary </intro>`.\n")


def block_chapter_settings(ctx: Ctx, chapter: str) -> str:
    nb = ctx.notebook(chapter)
    if nb is None:
        return missing(f"no {ctx.model_rel}/{chapter}/{chapter}.ipynb") + "\n"
    params = parameters(nb)
    pm = papermill_run(nb)
    shown = {k: v for k, v in params.items() if k not in ("results_dir", "results_root")}
    rows = [[code(k), esc(fmt_value(v))] for k, v in shown.items()]
    out = ["Run settings: the parameters this chapter ran with (its parameters cell, with the values papermill "
           "injected), and the hyperparameters it printed. How long it took and which commit produced it: "
           "{doc}`/reproduce`.", "",
           "::::{dropdown} Parameters and hyperparameters of this run",
           table(["parameter", "value"], rows)]
    hp = printed_hparams(nb)
    if hp:
        out.append(hparam_table({chapter: hp}))
    if pm.get("end_time"):
        out.append(f"Executed by papermill, finished {esc(pm['end_time'][:19].replace('T', ' '))} UTC.")
    out.append("::::")
    return "\n".join(out) + "\n"


def hparam_table(by_chapter: dict[str, dict]) -> str:
    names = list(by_chapter)
    keys = []
    for hp in by_chapter.values():
        keys += [k for k in hp if k not in keys and k != "source"]
    same = all(by_chapter[n] == by_chapter[names[0]] for n in names)
    cols = [names[0]] if same else names
    header = ["hyperparameter", "meaning"] + (["value"] if same else [f"value in {esc(n)}" for n in cols])
    rows = [[code(k), esc(HPARAM_MEANING.get(k, ""))] + [esc(fmt_value(by_chapter[n].get(k, ""))) for n in cols]
            for k in keys]
    sources = {hp.get("source") for hp in by_chapter.values() if hp.get("source")}
    text = table(header, rows)
    if sources:
        text += "\nWhere the values come from (the preset's own note): " + "; ".join(esc(s) for s in sources) + "\n"
    return text


def block_hyperparameters(ctx: Ctx) -> str:
    found = {}
    for name in CHAPTERS:
        nb = ctx.notebook(name)
        hp = printed_hparams(nb) if nb else None
        if hp:
            found[name] = hp
    if not found:
        return missing("no hyperparameters printed by any chapter notebook") + "\n"
    intro = (f"As printed by {', '.join(ctx.chapter(n) for n in found)}"
             + (" (identical in all of them)" if len({json.dumps(v, sort_keys=True) for v in found.values()}) == 1
                else "") + ".\n\n")
    return intro + hparam_table(found)


def block_projection_table(ctx: Ctx) -> str:
    """projection.csv transposed: one row per measure, one column per edited layer."""
    df = ctx.csv("projection_check/projection.csv")
    if df is None:
        return missing(f"no {ctx.model_rel}/projection_check/projection.csv") + "\n"
    measures = [("n_kept", "directions kept by P", 0), ("kept_share", "share of directions kept", "pct"),
                ("energy_kept", "share of the keys' energy in the kept directions", "pct"),
                ("ratio_heldout_mean", "‖Pk‖/‖k‖, held-out preserved keys (mean)", 2),
                ("ratio_heldout_p99", "‖Pk‖/‖k‖, held-out preserved keys (99th pct.)", 2),
                ("ratio_edit_keys_mean", "‖Pk‖/‖k‖, keys of the edit requests (mean)", 2),
                ("ratio_random_mean", "‖Pk‖/‖k‖, random directions (mean)", 2),
                ("heldout_keys", "held-out keys measured", 0)]
    rows = []
    for col, name, digits in measures:
        if col not in df:
            continue
        vals = [pct(v) if digits == "pct" else num(v, digits) if digits else f"{int(v):,}" for v in df[col]]
        rows.append([esc(name)] + vals)
    header = ["per edited layer"] + [f"layer {int(l)}" for l in df["layer"]]
    d_ff = int(df["d_ff"].iloc[0]) if "d_ff" in df else None
    return (table(header, rows)
            + f"\nOut of {d_ff:,} directions (d_ff) per layer. Source: "
              f"{ctx.download('projection_check/projection.csv')} (one row per layer).\n")


def block_projector_comparison(ctx: Ctx) -> str:
    df = ctx.csv("projection_check/projector_comparison.csv")
    if df is None:
        return missing(f"no {ctx.model_rel}/projection_check/projector_comparison.csv") + "\n"
    layers = sorted(df["layer"].unique())
    others = list(dict.fromkeys(df["other"]))
    out = []
    for col, title, digits in [("excess_over_chance", "Agreement of each other P with this model's P, beyond "
                                "chance (0 unrelated, 1 identical)", 2),
                               ("ratio_heldout_mean", "Leakage of each other P on this model's held-out preserved "
                                "keys, mean ‖Pk‖/‖k‖", 2)]:
        rows = []
        for o in others:
            sub = df[df["other"] == o].set_index("layer")
            rows.append([esc(o)] + [num(sub.loc[l, col], digits) if l in sub.index else "" for l in layers])
        out.append(f"**{esc(title)}**\n\n" + table(["P computed from"] + [f"layer {int(l)}" for l in layers], rows))
    return "\n".join(out) + f"\nSource: {ctx.download('projection_check/projector_comparison.csv')} (also the " \
                            "kept ranks, the raw subspace cosine and its chance level).\n"


def _by_edits(ctx: Ctx) -> pd.DataFrame | None:
    df = ctx.csv("edit_count/metrics_by_edits.csv")
    if df is None or not {"method", "edits", "family", "metric", "mean"} <= set(df.columns):
        return None
    if "prompt_kind" not in df:
        df = df.assign(prompt_kind="")
    return df


def _value(df: pd.DataFrame, method: str, edits: int, family: str, kind: str, metric: str) -> pd.Series | None:
    sel = df[(df["method"] == method) & (df["edits"] == edits) & (df["family"] == family) & (df["metric"] == metric)]
    if kind and (sel["prompt_kind"] != "").any():
        sel = sel[sel["prompt_kind"] == kind]
    return sel.iloc[0] if len(sel) else None


def block_accuracy_table(ctx: Ctx) -> str:
    """Means per method at every milestone: one table per method, a row per number of edits."""
    df = _by_edits(ctx)
    if df is None:
        return missing(f"no {ctx.model_rel}/edit_count/metrics_by_edits.csv") + "\n"
    short = {"official efficacy": "Eff", "official generalisation": "Gen", "official specificity": "Spe",
             "EasyEdit rewrite_acc": "RW", "EasyEdit rephrase_acc": "RP", "EasyEdit locality": "Loc",
             "generation exact match": "EM"}
    present = [m for m in MEASURES if ((df["family"] == m[0]) & (df["metric"] == m[2])).any()]
    out = ["Mean over the evaluated records, in percent (95% intervals in the CSV file). "
           + "; ".join(f"**{short[m[3]]}** {esc(m[3])}" for m in present) + ". 0 edits is the unedited model.", ""]
    for method in dict.fromkeys(df["method"]):
        rows = []
        for e in sorted(df[df["method"] == method]["edits"].unique()):
            cells = []
            for fam, kind, metric, name in present:
                v = _value(df, method, e, fam, kind, metric)
                cells.append("" if v is None else f"{100 * v['mean']:.1f}")
            rows.append([f"{int(e):,}"] + cells)
        out.append(f"**{label(method)}**\n")
        out.append(table(["edits"] + [short[m[3]] for m in present], rows, classes="study-compact"))
    out.append(f"Source: {ctx.download('edit_count/metrics_by_edits.csv')} (every family, prompt kind and "
               f"metric, with intervals); per record: {ctx.download('edit_count/metrics_raw.csv')}.")
    return "\n".join(out) + "\n"


def block_diagnostics_table(ctx: Ctx) -> str:
    df = ctx.csv("edit_count/diagnostics.csv")
    if df is None:
        return missing(f"no {ctx.model_rel}/edit_count/diagnostics.csv") + "\n"
    milestones = (ctx.json("edit_count/summary.json") or {}).get("milestones") or sorted(df["edits"].unique())
    sub = df[df["edits"].isin(milestones)]
    g = sub.groupby(["method", "edits"], sort=False)
    agg = g[["relative_change", "condition", "drift"]].mean().join(g[["target_steps", "seconds"]].first())
    rows = [[label(m), f"{int(e):,}", num(r.relative_change, 3), num(r.condition, 0), num(r.drift, 3),
             num(r.target_steps, 1), f"{r.seconds / 60:.1f}"] for (m, e), r in agg.iterrows()]
    return ("At the milestones; the first three columns are means over the edited layers.\n\n"
            + table(["method", "edits", "‖W−W⁰‖/‖W⁰‖", "condition number", "drift", "target steps",
                     "minutes per batch"], rows, classes="study-compact")
            + f"\nEvery batch and layer: {ctx.download('edit_count/diagnostics.csv')}.\n")


def block_onsets_table(ctx: Ctx) -> str:
    """onsets.csv: per measure, where each method first dropped and collapsed ('—': never within the stream)."""
    df = ctx.csv("edit_count/onsets.csv")
    if df is None:
        return missing(f"no {ctx.model_rel}/edit_count/onsets.csv") + "\n"
    methods = list(dict.fromkeys(df["method"]))
    fmt = lambda v: "—" if pd.isna(v) else f"{int(v):,}"
    rows = []
    for measure in dict.fromkeys(df["measure"]):
        cells = []
        for m in methods:
            r = df[(df["method"] == m) & (df["measure"] == measure)]
            cells += ["", ""] if r.empty else [fmt(r["drop"].iloc[0]), fmt(r["collapse"].iloc[0])]
        rows.append([esc(measure)] + cells)
    header = ["measure"] + [f"{label(m)} {w}" for m in methods for w in ("drop", "collapse")]
    first, last = int(df["first"].min()), int(df["last"].max())
    return (f"Edits at the first milestone that was a drop or a collapse (first milestone {first:,}, last "
            f"{last:,}; — where the stream never got there).\n\n" + table(header, rows, classes="study-compact")
            + f"\nSource: {ctx.download('edit_count/onsets.csv')}.\n")


def block_side_by_side(ctx: Ctx) -> str:
    """side_by_side.csv: every definition of each quantity, at each timing; one small table per quantity."""
    df = ctx.csv("metric_definitions/side_by_side.csv")
    if df is None:
        return missing(f"no {ctx.model_rel}/metric_definitions/side_by_side.csv") + "\n"
    timings = [c for c in ("unedited", "after_batch", "after_sequence") if c in df]
    names = {"unedited": "unedited", "after_batch": "right after its batch", "after_sequence": "after the sequence"}
    out = ["Mean over the edited records. Rates in percent; fluency rows as the notebook computes them (n-gram "
           "entropy, not ×100; TF-IDF cosine).", ""]
    for quantity in dict.fromkeys(df["quantity"]):
        sub = df[df["quantity"] == quantity]
        rate = quantity != "fluency"
        rows = [[esc(r["definition"])] + [f"{100 * r[t]:.1f}" if rate else num(r[t], 3) for t in timings]
                for _, r in sub.iterrows()]
        out.append(f"**{esc(quantity)}**\n")
        out.append(table(["definition"] + [names[t] for t in timings], rows, classes="study-compact"))
    out.append(f"Source: {ctx.download('metric_definitions/side_by_side.csv')}; per definition and family: "
               f"{ctx.download('metric_definitions/metrics_by_definition.csv')}.")
    return "\n".join(out) + "\n"


def block_gaps_table(ctx: Ctx) -> str:
    """gaps.csv with the kind of each gap; the timing rows collapsed to the largest per quantity."""
    df = ctx.csv("metric_definitions/gaps.csv")
    if df is None:
        return missing(f"no {ctx.model_rel}/metric_definitions/gaps.csv") + "\n"
    df = df.assign(kind=df["choice"].map(GAP_KIND).fillna("unclassified"))
    timing = df["kind"].str.startswith("timing")
    rows = [[esc(r["choice"]), esc(r["quantity"]), f"{100 * r['gap']:+.1f}", esc(r["kind"])]
            for _, r in df[~timing].iterrows()]
    for quantity, sub in df[timing].groupby("quantity", sort=False):
        r = sub.loc[sub["abs_gap"].idxmax()]
        rows.append([f"{esc(r['choice'])} (largest of {len(sub)} definitions)", esc(quantity),
                     f"{100 * r['gap']:+.1f}", esc(r["kind"])])
    return ("Difference of the means after the sequence, in points (first choice minus second).\n\n"
            + table(["choice", "quantity", "gap", "kind of difference"], rows, classes="study-cards study-gaps")
            + f"\nSource: {ctx.download('metric_definitions/gaps.csv')}.\n")


def block_quoted_table(ctx: Ctx) -> str:
    """The paper's Table 1 as quoted, transposed: a row per dataset and metric, a column per model and method."""
    q = ctx.quoted()
    if q is None:
        return missing("no results/quoted/alphaedit_table1.csv") + "\n"
    cols = list(dict.fromkeys(zip(q["model"], q["method"])))
    metrics = list(dict.fromkeys(zip(q["dataset"], q["metric"])))
    rows = []
    for ds, metric in metrics:
        cells = []
        for model, method in cols:
            v = q[(q["model"] == model) & (q["method"] == method) & (q["dataset"] == ds) & (q["metric"] == metric)]
            cells.append(f"{float(v['value'].iloc[0]):.2f}" if len(v) else "")
        rows.append([f"{esc(ds)} {esc(metric)}"] + cells)
    sources = "; ".join(esc(s) for s in dict.fromkeys(q["source"]))
    return (table(["quoted"] + [f"{esc(m)} {esc(me)}" for m, me in cols], rows)
            + f"\nSource of every number in this table: {sources} — copied into "
              "`results/quoted/alphaedit_table1.csv`; not produced by this study.\n")


# ------------------------------------------------------------------------------------------ what this means

def _ci(v: pd.Series | None) -> str:
    if v is None:
        return "n/a"
    if "ci_low" in v and not pd.isna(v["ci_low"]):
        return f"{pct(v['mean'])} [{pct(v['ci_low'])}, {pct(v['ci_high'])}]"
    return pct(v["mean"])


def _compare(a: pd.Series, b: pd.Series) -> int:
    """+1 when a's interval lies above b's, -1 below, 0 when they overlap (or no intervals)."""
    if "ci_low" not in a or pd.isna(a["ci_low"]) or pd.isna(b["ci_low"]):
        return 0
    return 1 if a["ci_low"] > b["ci_high"] else -1 if a["ci_high"] < b["ci_low"] else 0


def _direction(row) -> int:
    """+1 when a paired difference's interval lies above 0, -1 below, 0 when it contains 0."""
    return 1 if row["ci_low"] > 0 else -1 if row["ci_high"] < 0 else 0


def _spans(edits: list[int]) -> str:
    """Milestones as text: "100", "100 and 200", "100–1,500" (consecutive milestones of the stream)."""
    if len(edits) == 1:
        return f"{edits[0]:,}"
    return f"{edits[0]:,} and {edits[1]:,}" if len(edits) == 2 else f"{edits[0]:,}–{edits[-1]:,}"


def _stretches(sub: pd.DataFrame) -> list[tuple[int, list]]:
    """Paired-difference rows, in milestone order, grouped into runs of consecutive milestones with one direction."""
    runs: list[tuple[int, list]] = []
    for _, r in sub.sort_values("edits").iterrows():
        d = _direction(r)
        if runs and runs[-1][0] == d:
            runs[-1][1].append(r)
        else:
            runs.append((d, [r]))
    return runs


def _pts(row) -> str:
    return signed((row["diff"], row["ci_low"], row["ci_high"]), 100.0, 1, " points")


def block_seen_accuracy(ctx: Ctx) -> str:
    """What the accuracy figure shows: each method's level at the first and the last milestone, per headline
    measure, and the unedited model's."""
    df = _by_edits(ctx)
    if df is None:
        return missing(f"no {ctx.model_rel}/edit_count/metrics_by_edits.csv") + "\n"
    edited = sorted(e for e in df["edits"].unique() if e > 0)
    if not edited:
        return missing("no edited milestone in metrics_by_edits.csv") + "\n"
    first, last = int(edited[0]), int(edited[-1])
    lines = []
    for fam, kind, metric, name in MEASURES:
        parts = []
        for method in dict.fromkeys(df["method"]):
            a, b = _value(df, method, first, fam, kind, metric), _value(df, method, last, fam, kind, metric)
            if a is not None and b is not None:
                parts.append(f"{label(method)} {pct(a['mean'], 0)} → {pct(b['mean'], 0)}")
        base = _value(df, df["method"].iloc[0], 0, fam, kind, metric)
        if parts:
            lines.append(f"- **{esc(name)}**: " + ", ".join(parts)
                         + (f" (unedited {pct(base['mean'], 0)})" if base is not None else "") + ".")
    return (f"**What we see.** Each measure from the first milestone ({first:,} edits) to the last ({last:,}):\n\n"
            + "\n".join(lines) + "\n")


def block_seen_projector(ctx: Ctx) -> str:
    """What the projector figure shows: per layer, the directions P keeps, their energy and the leak of held-out
    preserved keys, against the edit keys and random directions; the sweep's protecting threshold."""
    df = ctx.csv("projection_check/projection.csv")
    if df is None or df.empty:
        return missing(f"no {ctx.model_rel}/projection_check/projection.csv") + "\n"
    df = df.sort_values("layer")
    lo, hi = df.iloc[0], df.iloc[-1]
    text = (f"**What we see.** From layer {int(lo['layer'])} to layer {int(hi['layer'])} P keeps "
            f"{pct(lo['kept_share'], 0)} to {pct(hi['kept_share'], 0)} of the directions, holding "
            f"{pct(lo['energy_kept'], 0)} to {pct(hi['energy_kept'], 0)} of the keys' energy. Held-out preserved keys "
            f"keep {num(lo['ratio_heldout_mean'])} to {num(hi['ratio_heldout_mean'])} of their norm through P, the "
            f"keys of the edits {num(lo['ratio_edit_keys_mean'])} to {num(hi['ratio_edit_keys_mean'])} and random "
            f"directions {num(lo['ratio_random_mean'])} to {num(hi['ratio_random_mean'])}. ")
    share = df["ratio_heldout_mean"].mean() / df["ratio_edit_keys_mean"].mean()
    text += (f"On average a preserved key keeps {pct(share, 0)} as much of its norm through P as a key of the edits "
             "does; a projector onto the preserved keys' null space would keep none of it. ")
    sweep = ctx.csv("projection_check/threshold_sweep.csv")
    if sweep is not None and {"threshold", "ratio_heldout_mean", "kept_share"} <= set(sweep.columns):
        by = sweep.groupby("threshold")[["ratio_heldout_mean", "kept_share"]].mean()
        ok = by[(by["ratio_heldout_mean"] < 0.1) & (by["kept_share"] > 0)]
        if len(ok):
            t = ok.index.max()
            text += (f"In the threshold sweep the largest threshold whose leak stays under 0.1 is {t:g}; it keeps "
                     f"{pct(ok.loc[t, 'kept_share'])} of the directions.")
        else:
            text += "No threshold of the sweep brings the leak under 0.1 while keeping any direction."
    return text + f" Source: {ctx.download('projection_check/projection.csv')}.\n"


def block_seen_gaps(ctx: Ctx) -> str:
    """What the definitions figure and the gaps table show: the largest gap between frameworks, within one, and
    from the timing of the scoring."""
    gaps = ctx.csv("metric_definitions/gaps.csv")
    if gaps is None or gaps.empty:
        return missing(f"no {ctx.model_rel}/metric_definitions/gaps.csv") + "\n"
    gaps = gaps.assign(kind=gaps["choice"].map(GAP_KIND).fillna("unclassified"))
    parts = []
    for start, what in (("between", "between two frameworks"), ("within", "within one framework"),
                        ("timing", "from scoring right after each batch instead of after the sequence")):
        sub = gaps[gaps["kind"].str.startswith(start)]
        if len(sub):
            r = sub.loc[sub["abs_gap"].idxmax()]
            parts.append(f"{what}, {pct(r['abs_gap'])} ({esc(r['choice'])}, {esc(r['quantity'])})")
    return ("**What we see.** The largest difference " + "; ".join(parts) + ". A probability comparison credits an "
            "edit once the new object beats the old one, a token accuracy only when every target token is the "
            "model's top choice, and a generated answer only when the model produces it unprompted: three tests of one "
            "edit, of different strictness, and the gaps measure how much that choice alone moves the number.\n")


def block_seen_paired(ctx: Ctx) -> str:
    """What the paired AlphaEdit − MEMIT figure shows, measure by measure: at which milestones AlphaEdit is higher,
    lower or not distinguishable (paired 95% interval), with the largest difference of each stretch."""
    df = ctx.csv("edit_count/paired_differences.csv")
    if df is None or df.empty:
        return missing(f"no {ctx.model_rel}/edit_count/paired_differences.csv") + "\n"
    words = {1: "higher", -1: "lower", 0: "not distinguishable"}
    lines, tally = [], {}
    for fam, kind, metric, name in MEASURES:
        sub = df[(df["family"] == fam) & (df["metric"] == metric)].sort_values("edits")
        if sub.empty:
            continue
        stretches = _stretches(sub)
        parts = []
        for d, rows in stretches:
            big = max(rows, key=lambda r: abs(r["diff"]))
            where = _spans([int(r["edits"]) for r in rows])
            parts.append(f"{words[d]} at {where} edits" + (f" (up to {_pts(big)} at {int(big['edits']):,})"
                                                            if d else ""))
        tally[metric] = [d for d, rows in stretches for _ in rows]  # one direction per milestone
        lines.append(f"- **{esc(name)}**: AlphaEdit " + "; ".join(parts) + ".")
    if not lines:
        return missing("no measure of the edit-count tables in paired_differences.csv") + "\n"
    edit_m = [m for m in ("efficacy", "generalization", "rewrite_acc", "rephrase_acc") if m in tally]
    keep_m = [m for m in ("specificity", "locality") if m in tally]
    summary = []
    if edit_m:
        n = sum(len(tally[m]) for m in edit_m)
        summary.append(f"in the edit measures AlphaEdit is higher in {sum(d == 1 for m in edit_m for d in tally[m])} "
                       f"and lower in {sum(d == -1 for m in edit_m for d in tally[m])} of {n} comparisons")
    if keep_m:
        n = sum(len(tally[m]) for m in keep_m)
        summary.append(f"in the preservation measures (specificity, locality) higher in "
                       f"{sum(d == 1 for m in keep_m for d in tally[m])} and lower in "
                       f"{sum(d == -1 for m in keep_m for d in tally[m])} of {n}")
    head = ("**What we see.** AlphaEdit − MEMIT on the same records at each milestone, paired 95% intervals; "
            "\"not distinguishable\" means the interval contains zero. In short, " + "; ".join(summary) + ".")
    return head + "\n\n" + "\n".join(lines) + f"\n\nSource: {ctx.download('edit_count/paired_differences.csv')}.\n"


def block_seen_diagnostics(ctx: Ctx) -> str:
    """What the diagnostics figure shows: how far each method's weights moved and how far the edited layers'
    outputs on held-out preserved keys drifted, at the last milestone both reached; conditioning; residual."""
    df = ctx.csv("edit_count/diagnostics.csv")
    if df is None or not {"alphaedit", "memit"} <= set(df["method"]):
        return missing(f"no {ctx.model_rel}/edit_count/diagnostics.csv for both methods") + "\n"
    milestones = (ctx.json("edit_count/summary.json") or {}).get("milestones") or sorted(df["edits"].unique())
    both = sorted(set(df[df["method"] == "alphaedit"]["edits"]) & set(df[df["method"] == "memit"]["edits"])
                  & set(milestones))
    if not both:
        return missing("no milestone that both methods reached in diagnostics.csv") + "\n"
    at, first = both[-1], both[0]
    top = int(df["layer"].max())
    row = lambda m, e, l=top: df[(df["method"] == m) & (df["edits"] == e) & (df["layer"] == l)].iloc[0]
    a, m = row("alphaedit", at), row("memit", at)
    mean = lambda meth, col: float(df[(df["method"] == meth) & (df["edits"] == at)][col].mean())
    ratio_w = mean("alphaedit", "relative_change") / mean("memit", "relative_change")
    ratio_d = mean("alphaedit", "drift") / mean("memit", "drift")
    further = "further than" if ratio_w > 1 else "less far than"
    text = (f"**What we see.** After {at:,} edits AlphaEdit's weights have moved {further} MEMIT's: at the last "
            f"edited layer ({top}) ‖W − W⁰‖/‖W⁰‖ is {num(a['relative_change'], 3)} against "
            f"{num(m['relative_change'], 3)} (×{ratio_w:.1f} on average over the edited layers), and the edited "
            f"layers' outputs on held-out preserved keys have drifted ×{ratio_d:.1f} as far ({num(a['drift'], 3)} "
            f"against {num(m['drift'], 3)} at layer {top}). ")
    if "condition" in df:
        c = lambda meth, e: float(df[(df["method"] == meth) & (df["edits"] == e)]["condition"].mean())
        text += (f"The condition number of AlphaEdit's solved system goes from {num(c('alphaedit', first), 0)} at "
                 f"{first:,} edits to {num(c('alphaedit', at), 0)} (it accumulates the keys of every earlier edit); "
                 f"MEMIT's goes from {num(c('memit', first), 0)} to {num(c('memit', at), 0)}. ")
    if "residual_left" in df:
        r = df.drop_duplicates(["method", "batch"]).groupby("method")["residual_left"].mean()
        text += (f"Averaged over the batches, AlphaEdit leaves {pct(r['alphaedit'], 0)} of the residual between the "
                 f"targets and the current outputs unfitted, MEMIT {pct(r['memit'], 0)}")
        gap = abs(r["alphaedit"] - r["memit"])
        text += (f": the two solves sit at different points of one trade-off between fitting the edits and "
                 f"leaving the rest alone (see {ctx.chapter('operating_points', 'the operating points')})."
                 if gap > (verdict_rules() or {"drop": 0.10})["drop"] else ".")
    return text + "\n"


def block_seen_capability(ctx: Ctx) -> str:
    """What the capability figure shows: held-out perplexity relative to the unedited model, and the hidden-state
    distance at the last layer, at the last milestone."""
    ppl = ctx.csv("edit_count/perplexity.csv")
    hid = ctx.csv("edit_count/hidden_drift.csv")
    if ppl is None or not {"alphaedit", "memit"} <= set(ppl["method"]):
        return missing(f"no {ctx.model_rel}/edit_count/perplexity.csv for both methods") + "\n"
    both = sorted(set(ppl[ppl["method"] == "alphaedit"]["edits"]) & set(ppl[ppl["method"] == "memit"]["edits"]) - {0})
    if not both or 0 not in set(ppl["edits"]):
        return missing("no edited milestone with an unedited reference in perplexity.csv") + "\n"
    at = both[-1]
    corpora = list(dict.fromkeys(ppl["corpus"]))
    pv = ppl.pivot_table(index="edits", columns=["method", "corpus"], values="perplexity", aggfunc="first")
    parts = []
    for corpus in corpora:
        base = pv.loc[0, ("alphaedit", corpus)]
        parts.append(f"{esc(corpus)} ×{pv.loc[at, ('alphaedit', corpus)] / base:.2f} (AlphaEdit) and "
                     f"×{pv.loc[at, ('memit', corpus)] / base:.2f} (MEMIT) of the unedited model's {base:.1f}")
    text = f"**What we see.** After {at:,} edits the held-out perplexity is " + "; ".join(parts) + ". "
    if hid is not None and {"alphaedit", "memit"} <= set(hid["method"]):
        top = int(hid["layer"].max())
        d = hid[(hid["edits"] == at) & (hid["layer"] == top)].groupby("method")["relative_distance"].mean()
        if {"alphaedit", "memit"} <= set(d.index):
            text += (f"At the last layer ({top}) the hidden states are {num(d['alphaedit'], 3)} (AlphaEdit) and "
                     f"{num(d['memit'], 3)} (MEMIT) of their norm away from the unedited model's. ")
    pc = ctx.csv("edit_count/paired_capability.csv")
    if pc is not None and {"edits", "comparison", "prompt_kind"} <= set(pc.columns):
        vs = pc[(pc["comparison"] == "alphaedit - memit") & pc["prompt_kind"].notna()]
        words = {1: "higher", -1: "lower", 0: "not distinguishable"}
        per_corpus = []
        for corpus, sub in vs.groupby("prompt_kind", sort=False):
            bits = []
            for d, rows in _stretches(sub):
                big = max(rows, key=lambda r: abs(r["diff"]))
                ratio = "×{:.2f} [{:.2f}, {:.2f}]".format(*(math.exp(big[c]) for c in ("diff", "ci_low", "ci_high")))
                bits.append(f"{words[d]} at {_spans([int(r['edits']) for r in rows])} edits"
                            + (f" (up to {ratio} at {int(big['edits']):,})" if d else ""))
            per_corpus.append(f"on {esc(corpus)} " + "; ".join(bits))
        if per_corpus:
            text += ("Paired over the same text windows (weighted by tokens, 95% intervals of the perplexity ratio), "
                     "AlphaEdit's perplexity against MEMIT's is " + "; ".join(per_corpus) + ". ")
    text += f"The paired comparisons and the P2 and P3 verdicts: {ctx.download('edit_count/paired_capability.csv')}."
    cols = [(m, c) for c in corpora for m in ("alphaedit", "memit")]
    rows = [[f"{int(e):,}"] + ["" if pd.isna(v := pv.loc[e].get(col)) else f"{v:.1f}" for col in cols]
            for e in pv.index]
    return (text + "\n\nHeld-out perplexity at each milestone (0: the unedited model):\n\n"
            + table(["edits"] + [f"{label(m)}, {esc(c)}" for m, c in cols], rows, classes="study-compact")
            + f"\nSource: {ctx.download('edit_count/perplexity.csv')}.\n")


def block_what_this_means(ctx: Ctx) -> str:
    out = []
    # --- the projector
    proj = ctx.csv("projection_check/projection.csv")
    sweep = ctx.csv("projection_check/threshold_sweep.csv")
    ps = ctx.json("projection_check/summary.json") or {}
    if proj is not None and {"kept_share", "ratio_heldout_mean", "ratio_random_mean"} <= set(proj.columns):
        leak, rand = proj["ratio_heldout_mean"].mean(), proj["ratio_random_mean"].mean()
        good = leak < 0.1
        text = (f"**The projector {'annihilates' if good else 'does not annihilate'} the preserved keys on this "
                f"model.** At the official absolute threshold ({esc(ps.get('threshold', 'n/a'))}), P keeps "
                f"{pct(proj['kept_share'].mean(), 0)} of the key directions (mean over the edited layers) and held-out "
                f"preserved keys keep {num(leak)} of their norm through it (random directions {num(rand)}). ")
        if not good:
            text += ("AlphaEdit's guarantee, that an update leaves preserved keys' outputs unchanged, then holds only "
                     "approximately: the threshold is absolute and the scale of the keys differs between models, so "
                     "it has to be re-chosen per model (C5).")
            if sweep is not None and "ratio_heldout_mean" in sweep:
                mean = sweep.groupby("threshold")["ratio_heldout_mean"].mean()
                ok = mean[mean < 0.1]
                if len(ok):
                    t = ok.index.max()
                    text += (f" In the sweep, a threshold of {t:g} brings the leakage below 0.1, but keeps only "
                             f"{pct(sweep[sweep['threshold'] == t]['kept_share'].mean())} of the directions — too few "
                             "for many edits, as the maintainers warn.")
        out.append(f"- {text} ({ctx.chapter('projection_check')})")
    else:
        out.append(f"- **The projector.** {missing('no projection_check results')}")
    # --- the edit stream
    df = _by_edits(ctx)
    es = ctx.json("edit_count/summary.json") or {}
    if df is not None and {"alphaedit", "memit"} <= set(df["method"]):
        last = int(df["edits"].max())
        first = int(sorted(e for e in df["edits"].unique() if e > 0)[0])
        a = _value(df, "alphaedit", last, "official", "rewrite", "efficacy")
        m = _value(df, "memit", last, "official", "rewrite", "efficacy")
        ar = _value(df, "alphaedit", last, "easyedit", "rewrite", "rewrite_acc")
        a0r = _value(df, "alphaedit", first, "easyedit", "rewrite", "rewrite_acc")
        a0 = _value(df, "alphaedit", first, "official", "rewrite", "efficacy")
        mr = _value(df, "memit", last, "easyedit", "rewrite", "rewrite_acc")
        sa = _value(df, "alphaedit", last, "official", "neighborhood", "specificity")
        sm = _value(df, "memit", last, "official", "neighborhood", "specificity")
        s0 = _value(df, "alphaedit", 0, "official", "neighborhood", "specificity")
        if not any(x is None for x in (a, m, ar, mr, a0, a0r)):
            c = _compare(a, m)
            word = {1: "edits better than", -1: "edits worse than", 0: "is not distinguishable from"}[c]
            text = (f"**After {last:,} sequential edits in batches of {esc(es.get('batch_size', 'n/a'))}, AlphaEdit "
                    f"{word} MEMIT** (official efficacy {_ci(a)} vs {_ci(m)}; EasyEdit rewrite_acc {_ci(ar)} vs "
                    f"{_ci(mr)}")
            if sa is not None and sm is not None:
                text += f"; specificity {_ci(sa)} vs {_ci(sm)}" + (f", unedited {_ci(s0)}" if s0 is not None else "")
            text += "). "
            fall_eff, fall_rw = a0["mean"] - a["mean"], a0r["mean"] - ar["mean"]
            drop = (verdict_rules() or {"drop": 0.10})["drop"]
            if abs(fall_eff - fall_rw) > drop:
                text += (f"How much AlphaEdit degrades depends on the metric: from {first:,} to {last:,} edits its "
                         f"efficacy fell by {100 * fall_eff:.1f} points and its token accuracy by "
                         f"{100 * fall_rw:.1f} (C13). ")
            else:
                text += (f"From {first:,} to {last:,} edits its efficacy fell by {100 * fall_eff:.1f} points and its "
                         f"token accuracy by {100 * fall_rw:.1f}. ")
            on = ctx.csv("edit_count/onsets.csv")
            if on is not None and "collapse" in on:
                def onset(method):
                    r = on[(on["method"] == method) & (on["measure"] == "easyedit: rewrite_acc")]
                    return None if r.empty or pd.isna(r["collapse"].iloc[0]) else int(r["collapse"].iloc[0])
                ca, cm = onset("alphaedit"), onset("memit")
                if not ca and not cm:
                    text += (f"EasyEdit rewrite_acc stayed above half its first-milestone value through {last:,} "
                             f"edits for both methods. ")
                else:
                    said = lambda name, x: (f"{name}'s fell below half its first-milestone value at {x:,} edits" if x
                                            else f"{name}'s stayed above half of it through {last:,} edits")
                    text += f"EasyEdit rewrite_acc: {said('MEMIT', cm)}; {said('AlphaEdit', ca)}"
                    if ca and cm:
                        text += (": AlphaEdit postpones that collapse but does not prevent it. " if ca > cm else
                                 ": at the same milestone. " if ca == cm else ": earlier than MEMIT. ")
                    else:
                        text += (": AlphaEdit postpones that collapse beyond the stream so far. " if cm else
                                 ": MEMIT's edits hold longer. ")
            places = [p for p in (ctx.chapter("edit_count"), ctx.figure("fig-accuracy-vs-edits")) if p]
            out.append(f"- {text}({', '.join(places)})")
        else:
            out.append(f"- **The edit stream.** {missing('no efficacy / rewrite_acc rows in metrics_by_edits.csv')}")
    else:
        out.append(f"- **The edit stream.** {missing('no edit_count results for both methods')}")
    # --- preservation, paired
    paired = ctx.csv("edit_count/paired_differences.csv")
    if paired is not None and {"diff", "ci_low", "ci_high", "metric"} <= set(paired.columns):
        keep = paired[[(f, m) in {("official", "specificity"), ("easyedit", "locality")}
                       for f, m in zip(paired["family"], paired["metric"])]]
        if len(keep):
            d = keep.apply(_direction, axis=1)
            text = (f"**Preservation, paired on the same records.** AlphaEdit's specificity and EasyEdit locality are "
                    f"higher than MEMIT's in {int((d == 1).sum())} and lower in {int((d == -1).sum())} of "
                    f"{len(keep)} milestone comparisons")
            if (d == -1).any():
                worst = keep[d == -1].loc[lambda t: t["diff"].idxmin()]
                text += (f" (largest deficit {_pts(worst)}, {esc(worst['metric'])} at {int(worst['edits']):,} "
                         f"edits)")
            text += ". "
            text += ("The preservation advantage of the paper's Table 1 does not appear in this stream. "
                     if (d == 1).sum() == 0 else "")
            places = [p for p in (ctx.chapter("edit_count"), ctx.figure("fig-paired-differences")) if p]
            out.append(f"- {text}({', '.join(places)})")
    # --- equal edit strength (the operating-points sweep)
    eq = ctx.csv("operating_points/equal_efficacy.csv")
    ops = ctx.json("operating_points/summary.json") or {}
    if eq is not None and {"kind", "measure", "diff", "ci_low", "ci_high"} <= set(eq.columns):
        inter = eq[(eq["kind"] == "interpolated") & eq["diff"].notna()]
        keep = inter[inter["measure"].isin(["specificity", "locality"])]
        drift = inter[inter["measure"] == "drift"]
        if len(keep):
            d = keep.apply(_direction, axis=1)
            text = (f"**At equal edit strength the methods are close.** Interpolated to the same efficacy along "
                    f"each of AlphaEdit's knobs and MEMIT's λ after {esc(ops.get('n_edits', 'n/a'))} edits, "
                    f"AlphaEdit's specificity and EasyEdit locality are higher than MEMIT's in {int((d == 1).sum())}, "
                    f"lower in {int((d == -1).sum())} and not distinguishable in {int((d == 0).sum())} of "
                    f"{len(keep)} paired comparisons")
            if len(drift):
                dd = drift.apply(_direction, axis=1)
                text += (f"; its hidden states drift further on held-out text in {int((dd == 1).sum())} of "
                         f"{len(drift)}")
            text += ". "
            cal = ctx.json("operating_points/calibrated.json")
            if cal and "rule" in cal:
                rule = cal["rule"]
                share = rule.get("nullspace_energy")
                crit = cal.get("criterion", {})
                text += (f"A scale-free projector (the energy rule, keeping the weakest directions that together hold "
                         f"{pct(share, 0)} of the keys' energy) calibrated on the sweep lets held-out keys keep "
                         f"{num(cal.get('leak_heldout'))} of their norm "
                         + (f"(under the target {num(crit.get('leak_target'))})" if cal.get("protects") else
                            f"(the target {num(crit.get('leak_target'))} is out of reach while the edits still land)")
                         + f" at efficacy {pct(cal.get('efficacy'))}. ")
            places = [p for p in (ctx.chapter("operating_points"), ctx.figure("fig-operating-equal")) if p]
            out.append(f"- {text}({', '.join(places)})")
    # --- the metrics
    gaps = gap_summary(ctx)
    md = ctx.json("metric_definitions/summary.json") or {}
    if gaps:
        g = ctx.csv("metric_definitions/gaps.csv")
        timing = g[g["choice"].map(GAP_KIND).fillna("").str.startswith("timing")]["abs_gap"].max()
        out.append(f"- **The number depends on its definition more than on the framework.** On one model after "
                   f"{esc(md.get('n_edits', 'n/a'))} AlphaEdit edits, {gaps}. Scoring right after each batch instead "
                   f"of after the whole sequence moves a metric by at most {pct(timing)}. ({ctx.chapter('metric_definitions')})")
    else:
        out.append(f"- **Metric definitions.** {missing('no metric_definitions/gaps.csv')}")
    # --- the cost
    diag = ctx.csv("edit_count/diagnostics.csv")
    if diag is not None and {"method", "batch", "seconds"} <= set(diag.columns):
        per = diag.drop_duplicates(["method", "batch"]).groupby("method")["seconds"].agg(["sum", "count"])
        costs = "; ".join(f"{label(mth)} {hours(r['sum'])} over {int(r['count'])} batches" for mth, r in per.iterrows())
        out.append(f"- **It is slow on a CPU.** Editing alone (targets, keys, solve; evaluation extra) took {costs} "
                   f"({ctx.download('edit_count/diagnostics.csv')}, column `seconds`; see {{doc}}`/reproduce`).")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------- reproduce blocks

def _git(book: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=book, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def block_costs(ctx: Ctx) -> str:
    rows = []
    for name in (*CHAPTERS, LEDGER):
        nb = ctx.notebook(name)
        if nb is None:
            continue
        pm = papermill_run(nb)
        prov = ctx.json(f"{name}/provenance.json")
        measured = []
        if name in ("edit_count", "collapse"):  # edit_count: one stream per method; collapse: its own streams
            diag = ctx.csv(f"{name}/diagnostics.csv")
            who = "method" if name == "edit_count" else "stream"
            if diag is not None and {who, "batch", "seconds"} <= set(diag.columns):
                if name == "collapse":  # its plain AlphaEdit and MEMIT streams are edit_count's, counted there
                    diag = diag[~diag[who].isin(["alphaedit", "memit"])]
                per = diag.drop_duplicates([who, "batch"]).groupby(who, sort=False)["seconds"]
                for mth, s in per:
                    measured.append(f"{label(mth)}: editing {hours(s.sum())} in {len(s)} batches "
                                    f"({s.mean() / 60:.0f} min per batch, {s.min() / 60:.0f}–{s.max() / 60:.0f})")
        last_run = f"{pm['duration'] / 60:.1f} min" if pm.get("duration") is not None else "not recorded"
        wall = "not recorded"
        if prov and prov.get("wall_seconds") is not None:
            cpus = (prov.get("machine") or {}).get("cpu_count")
            wall = f"{prov['wall_seconds'] / 60:.1f} min" + (f" on {cpus} CPUs" if cpus else "")
            if prov.get("parallel_runs_wall_seconds") is not None:
                wall += f", after {hours(prov['parallel_runs_wall_seconds'])} of parallel per-method runs"
        rows.append([ctx.chapter(name), esc(last_run), esc(wall), esc("; ".join(measured)) or "—"])
    if not rows:
        return missing("no executed notebooks") + "\n"
    return table(["chapter", "last papermill run", "provenance.json wall time", "measured per batch"], rows,
                 classes="study-cards study-costs") + "\n"


def block_provenance(ctx: Ctx) -> str:
    rows = []
    for name in (*CHAPTERS, LEDGER):
        nb = ctx.notebook(name)
        if nb is None:
            continue
        pm = papermill_run(nb)
        prov = ctx.json(f"{name}/provenance.json")
        if prov:
            commit = code(str(prov.get('git_commit', ''))[:10]) + (" (uncommitted changes)" if prov.get("git_dirty")
                                                                        else "")
        else:
            commit = "not recorded (no provenance.json)"
        committed = _git(ctx.book, "log", "-1", "--format=%h %cs", "--", str((ctx.model_dir / name).resolve()))
        params = {k: v for k, v in parameters(nb).items() if k not in ("results_dir", "results_root")}
        injected = pm.get("parameters", {}) or {}
        shown = "; ".join(f"{k}={fmt_value(v)}" for k, v in params.items() if k in injected or k in ("n_edits",
                                                                                                    "batch_size"))
        rows.append([ctx.chapter(name), esc((pm.get("end_time") or "")[:10]) or "not recorded", commit,
                     code(committed) if committed else "unknown (no git)", esc(shown)])
    if not rows:
        return missing("no executed notebooks") + "\n"
    return table(["chapter", "executed", "code commit that ran it", "results committed in", "parameters"],
                 rows, classes="study-cards study-provenance") + "\n"


def block_versions(ctx: Ctx) -> str:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            return "The pinned versions are in `pyproject.toml` (this Python cannot read TOML to list them here).\n"
    pyproject = ctx.book.parent / "pyproject.toml"
    ctx.deps.add(str(pyproject))
    if not pyproject.is_file():
        return missing("no pyproject.toml") + "\n"
    meta = tomllib.loads(pyproject.read_text())["project"]
    extras = meta.get("optional-dependencies", {})
    pins = list(meta.get("dependencies", [])) + list(extras.get("study", []))
    recorded = {}
    for name in (*CHAPTERS, LEDGER):
        prov = ctx.json(f"{name}/provenance.json")
        if prov:
            recorded.update({k.lower(): v for k, v in prov.get("versions", {}).items()})
    rows = []
    for pin in pins:
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)", pin)
        if m:
            row = [code(m.group(1)), esc(m.group(2))]
            if recorded:
                row.append(esc(recorded.get(m.group(1).lower(), "not recorded")))
            rows.append(row)
    header = ["package", "pinned"] + (["used by the last recorded run"] if recorded else [])
    note = ("" if recorded else " No run has recorded the versions it used yet (provenance.json); the results "
            "shown were produced before that record existed.")
    dev = ", ".join(code(p) for p in extras.get("dev", []))
    return (f"Python {esc(meta.get('requires-python', ''))}. The study's pins in `pyproject.toml` (what `make study` "
            f"installs: the package and its `study` extra).{note}\n\n" + table(header, rows, classes="study-compact")
            + (f"\nTests and checks (the `dev` extra): {dev}.\n" if dev else ""))


def block_downloads(ctx: Ctx) -> str:
    out = []
    for name in (*CHAPTERS, LEDGER):
        folder = ctx.path(name)
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix in (".csv", ".json") and p.is_file())
        links = [f"{ctx.download(f'{name}/{p.name}')} ({p.stat().st_size / 1024:,.0f} KB)" for p in files]
        out.append(f"- {ctx.chapter(name)}: " + ", ".join(links))
    q = ctx.results_root / "quoted" / "alphaedit_table1.csv"
    if q.is_file():
        rel = Path(q).resolve().relative_to(ctx.book.resolve().parent / "results") if str(q.resolve()).startswith(
            str((ctx.book.resolve().parent / "results"))) else None
        if rel is not None:
            out.append("- quoted from the paper: {download}`alphaedit_table1.csv </results/" + rel.as_posix() + ">`")
    return "\n".join(out) + "\n" if out else missing("no results folders") + "\n"


BLOCKS = {
    "verdict-counts": block_verdict_counts,
    "verdicts": block_verdicts,
    "paper-verdicts": block_paper_verdicts,
    "vocabulary": block_vocabulary,
    "claims": block_claims,
    "not-tested": block_not_tested,
    "what-this-means": block_what_this_means,
    "seen-accuracy": block_seen_accuracy,
    "seen-paired": block_seen_paired,
    "seen-projector": block_seen_projector,
    "seen-gaps": block_seen_gaps,
    "seen-diagnostics": block_seen_diagnostics,
    "seen-capability": block_seen_capability,
    "hyperparameters": block_hyperparameters,
    "projection-table": block_projection_table,
    "projector-comparison": block_projector_comparison,
    "accuracy-table": block_accuracy_table,
    "diagnostics-table": block_diagnostics_table,
    "quoted-table": block_quoted_table,
    "onsets-table": block_onsets_table,
    "side-by-side": block_side_by_side,
    "gaps-table": block_gaps_table,
    "costs": block_costs,
    "provenance": block_provenance,
    "versions": block_versions,
    "downloads": block_downloads,
}
CHAPTER_BLOCKS = {"chapter-verdicts": block_chapter_verdicts, "chapter-settings": block_chapter_settings}


def render_block(name: str, ctx: Ctx, chapter: str | None = None) -> str:
    if name in CHAPTER_BLOCKS:
        if chapter is None:
            raise ValueError(f"block {name!r} belongs in a chapter (pass :chapter:)")
        return CHAPTER_BLOCKS[name](ctx, chapter)
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; known: {sorted(BLOCKS) + sorted(CHAPTER_BLOCKS)}")
    return BLOCKS[name](ctx)


# --------------------------------------------------------------------------------------------- inline values

def signed(v, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
    """A signed number, or a paired difference with its interval (the `interval` field): "+7.0 points [+2.0, +12.0]"."""
    if isinstance(v, tuple):
        d, lo, hi = (scale * float(x) for x in v)
        return f"{d:+.{digits}f}{unit} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return f"{scale * float(v):+.{digits}f}{unit}"


FORMATS = {
    "signed": lambda v: signed(v), "pts": lambda v: signed(v, 100.0, 1, " points"),
    "pct": lambda v: pct(v), "pct0": lambda v: pct(v, 0), "int": lambda v: f"{int(round(float(v))):,}",
    "f1": lambda v: f"{float(v):.1f}", "f2": lambda v: f"{float(v):.2f}", "f3": lambda v: f"{float(v):.3f}",
    "hours": lambda v: f"{float(v) / 3600:.1f} h", "minutes": lambda v: f"{float(v) / 60:.0f} min",
    "raw": lambda v: fmt_value(v), "list": lambda v: fmt_value(v),
    "range": lambda v: (f"{v[0]}–{v[-1]}" if isinstance(v, list) and v else fmt_value(v)),
}
AGGREGATES = {"sum": "sum", "mean": "mean", "max": "max", "min": "min", "count": "count", "first": "first"}


class ResultError(ValueError):
    """A `{result}` reference that cannot be read (a typo, not a missing file)."""


def resolve_result(ctx: Ctx, spec: str) -> tuple[str, bool]:
    """Resolve a `{result}` role: `FILE | FIELD | FILTERS | FORMAT` (FILTERS and FORMAT optional).

    FILE is relative to the model's results folder (`edit_count/summary.json`). For JSON, FIELD is a dotted path
    (`claims.C7.verdict`, `layers`). For CSV, FIELD is a column, optionally aggregated: `sum(seconds)`,
    `mean(kept_share)`, `count`; FILTERS are `column=value` pairs separated by commas, where the value `first` or
    `last` means the smallest or largest value of that column among the rows left; the field `interval` of a table
    of paired differences (diff, ci_low, ci_high) is the difference with its interval, in the format `signed`
    (+0.070 [+0.020, +0.120]) or `pts` (+7.0 points [+2.0, +12.0]). FORMAT is one of FORMATS (default: raw). Returns (text, True), or (what is missing, False) for a missing file, key or row; raises
    ResultError for a malformed reference.
    """
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) < 2 or len(parts) > 4:
        raise ResultError(f"{{result}}`{spec}`: expected 'FILE | FIELD [| FILTERS] [| FORMAT]'")
    rel, fieldspec, filters, fmt = parts[0], parts[1], "", "raw"
    if len(parts) == 3:
        filters, fmt = ("", parts[2]) if parts[2] in FORMATS else (parts[2], "raw")
    elif len(parts) == 4:
        filters, fmt = parts[2], parts[3]
    if fmt not in FORMATS:
        raise ResultError(f"{{result}}`{spec}`: unknown format {fmt!r}; known: {sorted(FORMATS)}")
    path = ctx.path(rel)
    ctx.deps.add(str(path))
    if not path.is_file():
        return f"no {rel}", False
    if path.suffix == ".json":
        if filters:
            raise ResultError(f"{{result}}`{spec}`: filters apply to CSV files only")
        value = json.loads(path.read_text())
        for key in fieldspec.split("."):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                return f"no {fieldspec} in {rel}", False
        return FORMATS[fmt](value), True
    df = pd.read_csv(path)
    m = re.fullmatch(r"(\w+)\((\w+)\)|(\w+)", fieldspec)
    if not m:
        raise ResultError(f"{{result}}`{spec}`: bad field {fieldspec!r}")
    agg, column = (m.group(1), m.group(2)) if m.group(1) else (None, m.group(3))
    if column == "count" and agg is None:
        agg = "count"
    if agg is not None and agg not in AGGREGATES:
        raise ResultError(f"{{result}}`{spec}`: unknown aggregate {agg!r}; known: {sorted(AGGREGATES)}")
    relative = []
    for f in [f for f in filters.split(",") if f.strip()]:
        if "=" not in f:
            raise ResultError(f"{{result}}`{spec}`: bad filter {f!r} (expected column=value)")
        k, v = (x.strip() for x in f.split("=", 1))
        if k not in df:
            return f"no column {k} in {rel}", False
        if v in ("first", "last"):
            relative.append((k, v))
            continue
        col = df[k]
        try:
            number = float(v)
        except ValueError:
            number = None
        df = df[col == number] if number is not None and pd.api.types.is_numeric_dtype(col) else df[col.astype(str) == v]
    for k, v in relative:
        if len(df):
            df = df[df[k] == (df[k].min() if v == "first" else df[k].max())]
    if agg == "count":
        return FORMATS[fmt](len(df)), True
    if column == "interval" and agg is None and "interval" not in df:  # a paired difference: diff [ci_low, ci_high]
        if fmt not in ("signed", "pts"):
            raise ResultError(f"{{result}}`{spec}`: the interval field takes the format signed or pts")
        if not {"diff", "ci_low", "ci_high"} <= set(df):
            return f"no paired interval (diff, ci_low, ci_high) in {rel}", False
        if df.empty:
            return f"no row of {rel} matches {filters}", False
        if len(df) > 1:
            raise ResultError(f"{{result}}`{spec}`: {len(df)} rows match; filter further")
        r = df.iloc[0]
        return FORMATS[fmt]((r["diff"], r["ci_low"], r["ci_high"])), True
    if column not in df:
        return f"no column {column} in {rel}", False
    if df.empty:
        return f"no row of {rel} matches {filters}", False
    if agg is None:
        if len(df) > 1:
            raise ResultError(f"{{result}}`{spec}`: {len(df)} rows match; filter further or aggregate")
        return FORMATS[fmt](df[column].iloc[0]), True
    if agg == "first":
        return FORMATS[fmt](df[column].iloc[0]), True
    return FORMATS[fmt](getattr(df[column], agg)()), True

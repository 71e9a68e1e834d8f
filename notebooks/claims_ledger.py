# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Claims ledger
#
# Every claim of the study with its verdict, the evidence behind it, the model and the number of edits it was tested
# with, and the notebook that produced it. This page computes nothing: it reads the `summary.json` that each
# experiment notebook wrote next to its results (`results/<model>/<notebook>/summary.json`) and the claim texts in
# `book/claims.csv`. Claims without an experiment are listed as *not tested yet*, with the reason.

# %% tags=["parameters", "remove-cell"]
results_root = "../results"  # folder holding results/<model>/<notebook>/summary.json (relative to the working dir)
model = "smollm2-135m-instruct"  # the default model: its verdicts come first

# %% tags=["hide-input"]
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

ROOT = Path(results_root)
if not ROOT.is_dir():
    raise FileNotFoundError(
        f"results_root={results_root!r} is not a folder (resolved from {Path.cwd()}): pass -p results_root "
        "<path to results/> to papermill, or run it with --cwd notebooks"
    )


def find_up(relative: str) -> Path:
    """`relative` under results_root or the nearest folder above it (results/quick/ sits inside results/)."""
    for d in (ROOT.resolve(), *ROOT.resolve().parents):
        if (d / relative).is_file():
            return d / relative
    raise FileNotFoundError(f"no {relative} in {ROOT.resolve()} or any folder above it")


CLAIMS_CSV = find_up("book/claims.csv")  # the claim texts live with the book
QUOTED_CSV = find_up("quoted/alphaedit_table1.csv")  # results/quoted/
VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "not testable here")


def md_escape(text) -> str:
    """Text safe inside a Markdown (MyST) table cell: no markup, no math, no column breaks."""
    s = "" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text)
    s = " ".join(s.split())
    for ch in "\\`*_[]<>|$~{}":
        s = s.replace(ch, "\\" + ch)
    return s


def md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(md_escape(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


claims = pd.read_csv(CLAIMS_CSV, dtype=str, keep_default_na=False)
claims["n"] = range(len(claims))  # the order of claims.csv: the practitioners' C1-C13, the paper's P1-P4, later work

# %% tags=["hide-input"]
summaries = []
for path in sorted(ROOT.glob("*/*/summary.json")):
    s = json.loads(path.read_text())
    for key in ("model", "notebook", "claims"):
        if key not in s:
            raise KeyError(f"{path}: summary.json has no {key!r}")
    summaries.append(s)

def run_fields(s: dict) -> dict:
    """What a summary.json says a result was tested with: model, edits, notebook, quick or full run."""
    return {"model": s["model"], "n_edits": "" if s.get("n_edits") is None else f"{int(s['n_edits']):,}",
            "notebook": s["notebook"], "run": "quick" if s.get("quick") else "full"}


rows = []
for s in summaries:
    for cid, c in s["claims"].items():
        verdict = str(c.get("verdict", "")).strip()
        if verdict not in VERDICTS:
            raise ValueError(f"results/{s['model']}/{s['notebook']}/summary.json: claim {cid} has verdict "
                             f"{verdict!r}, expected one of {VERDICTS}")
        rows.append({"id": cid, "verdict": verdict, "evidence": c.get("evidence", ""), **run_fields(s)})
found = pd.DataFrame(rows, columns=["id", "verdict", "evidence", "model", "n_edits", "notebook", "run"])
# another model's run answers only what it tested (e.g. the C3 run of a second model writes C4, C5 and P4 as not
# testable: it ran no sweep): its "not testable here" rows are left out where the claim has another row
idle = (found["model"] != model) & (found["verdict"] == "not testable here")
found = found[~idle | ~found["id"].isin(found.loc[~idle, "id"])].reset_index(drop=True)

missing = []
for c in claims.itertuples():
    if c.id in set(found["id"]):
        continue
    if c.notebook:
        reason = (f"not run yet: notebook {c.notebook} has written no summary.json with this claim under "
                  f"results/{model}/{c.notebook}/")
    else:
        reason = c.untested_reason
    missing.append({"id": c.id, "verdict": "not tested yet", "evidence": reason, "model": "", "n_edits": "",
                    "notebook": c.notebook, "run": ""})

ledger = pd.concat([found, pd.DataFrame(missing, columns=found.columns)], ignore_index=True)
ledger = ledger.merge(claims[["id", "n", "title", "statement"]], on="id", how="left")
unknown = ledger[ledger["n"].isna()]["id"].tolist()
if unknown:
    raise ValueError(f"claims {unknown} appear in a summary.json but not in {CLAIMS_CSV}")
ledger["default_model_first"] = ledger["model"] != model
ledger = ledger.sort_values(["n", "default_model_first", "model"]).reset_index(drop=True)

out_dir = ROOT / model / "claims_ledger"
out_dir.mkdir(parents=True, exist_ok=True)
ledger[["id", "title", "verdict", "evidence", "model", "n_edits", "notebook", "run"]].to_csv(
    out_dir / "ledger.csv", index=False)

counts = ledger.drop_duplicates("id", keep="first")["verdict"].value_counts()
display(Markdown(
    f"{len(claims)} claims; read {len(summaries)} `summary.json` file(s) from `results/` "
    f"(models: {', '.join(sorted({s['model'] for s in summaries})) or 'none'}). "
    "Verdicts (first row of each claim): " + ", ".join(f"{v} {n}" for v, n in counts.items()) + "."
))

# %% [markdown]
# ## Verdicts
#
# *Tested with* names the model, the number of sequential edits the notebook made, the notebook, and whether it ran
# in its quick (smoke-test) mode or in full. The evidence is the notebook's own summary of its numbers; the chapter
# of the same name shows how they were obtained. The claims' full statements follow the table.

# %% tags=["hide-input"]
def tested_with(row) -> str:
    if not row["model"]:
        return row["notebook"] or ""
    edits = f"{row['n_edits']} edits" if row["n_edits"] else "no edits"
    return f"{row['model']}, {edits}, {row['notebook']} ({row['run']})"


table = pd.DataFrame({
    "Claim": ledger["id"] + " " + ledger["title"],
    "Verdict": ledger["verdict"],
    "Evidence": ledger["evidence"],
    "Tested with": ledger.apply(tested_with, axis=1),
})
display(Markdown(md_table(table)))

# %% [markdown]
# ## Questions answered beside the verdicts
#
# Some chapters answer a question about a claim rather than re-judge it: the collapse chapter asks *why* C7's
# collapse happens (does it track the growth of the edited weights, and does bounding that growth postpone it?) and
# whether the calibrated projector buys AlphaEdit the paper's preservation advantage over a long stream. Their answers
# ("yes", "partly", "no", or "not testable here" with the reason) come from the `why` entries of the chapters'
# `summary.json`; the verdicts above do not change with them. The collapse chapter also asks where AlphaEdit's
# durability comes from; its answer names the parts (the projection P, the accumulated constraint cache_c) whose
# removal made the edits worse.

# %% tags=["hide-input"]
ANSWERS = ("yes", "yes, at a cost in efficacy", "partly", "no", "not testable here")
why_rows = []
for s in summaries:
    for key, w in (s.get("why") or {}).items():
        answer = str(w.get("answer", "")).strip()
        allowed = tuple(w.get("answers") or ANSWERS)  # a question with answers of its own lists them
        if answer not in allowed:
            raise ValueError(f"results/{s['model']}/{s['notebook']}/summary.json: question {key!r} has answer "
                             f"{answer!r}, expected one of {allowed}")
        why_rows.append({"about": key, "question": w.get("question", ""), "answer": answer,
                         "evidence": w.get("evidence", ""),  # a question's own edits where it says (its streams)
                         **run_fields({**s, "n_edits": w.get("edits", s.get("n_edits"))})})
why = pd.DataFrame(why_rows, columns=["about", "question", "answer", "evidence", "model", "n_edits", "notebook",
                                      "run"])
why.to_csv(out_dir / "questions.csv", index=False)
if len(why):
    display(Markdown(md_table(pd.DataFrame({"About": why["about"], "Question": why["question"],
                                            "Answer": why["answer"], "Evidence": why["evidence"],
                                            "Tested with": why.apply(tested_with, axis=1)}))))
else:
    display(Markdown("No chapter has answered such a question yet (the collapse chapter has not been run)."))

# %% [markdown]
# ### The claims

# %% tags=["hide-input"]
statements = claims.sort_values("n")
display(Markdown(md_table(pd.DataFrame({"Claim": statements["id"] + " " + statements["title"],
                                        "Statement": statements["statement"]}))))

# %% [markdown]
# ## Published numbers (quoted from the AlphaEdit paper, Table 1; not ours)
#
# These numbers are **quoted** from the AlphaEdit paper (ICLR 2025, Table 1: 2,000 CounterFact or ZsRE edits in
# batches of 100), copied into `results/quoted/alphaedit_table1.csv`. This study did not produce them. Values are
# percentages; fluency is the n-gram entropy ×100 and consistency the TF-IDF similarity ×100.

# %% tags=["hide-input", "remove-output", "study-after-quoted-table"]
quoted = pd.read_csv(QUOTED_CSV)
if not quoted["source"].str.contains("quoted").all():
    raise ValueError(f"{QUOTED_CSV}: every row must be labelled as quoted in its source column")
wide = quoted.pivot_table(index=["model", "method"], columns=["dataset", "metric"], values="value", sort=False)
order = [("CounterFact", m) for m in ("efficacy", "generalization", "specificity", "fluency", "consistency")]
order += [("ZsRE", m) for m in ("efficacy", "generalization", "specificity")]
wide = wide[[c for c in order if c in wide.columns]]
shown = pd.DataFrame({"Model": [i[0] for i in wide.index], "Method": [i[1] for i in wide.index]})
for (dataset, metric) in wide.columns:
    shown[f"{dataset} {metric}"] = [f"{v:.2f}" for v in wide[(dataset, metric)]]
shown["Source"] = quoted["source"].iloc[0]
display(Markdown(md_table(shown)))

# %% [markdown]
# ## Ours beside the quoted numbers
#
# Our official CounterFact-style metrics (probability comparison) after the most edits the `edit_count` notebook
# made, with their 95% confidence intervals, next to the quoted LLaMA3-8B rows. They are **not** the same experiment:
# ours ran on SmolLM2-135M-Instruct (dequantized from a 4-bit GGUF) and the offline counterfactual dataset, the
# paper's on LLaMA3-8B and CounterFact. The table shows where we stand, not whether a number was reproduced; the
# verdicts above say that.

# %% tags=["hide-input"]
METRICS = {"efficacy": "efficacy", "generalization": "generalization", "generalisation": "generalization",
           "specificity": "specificity"}
by_edits = ROOT / model / "edit_count" / "metrics_by_edits.csv"
if by_edits.exists():
    ours = pd.read_csv(by_edits)
    ours = ours[ours["family"].astype(str).str.lower() == "official"].copy()
    if "dataset" in ours.columns and ours["dataset"].astype(str).str.lower().str.contains("counterfact").any():
        ours = ours[ours["dataset"].astype(str).str.lower().str.contains("counterfact")]
    ours["metric"] = ours["metric"].astype(str).str.lower().map(METRICS)
    ours = ours.dropna(subset=["metric"])
    scale = 100.0 if ours[["mean", "ci_low", "ci_high"]].abs().max().max() <= 1.0 else 1.0  # paper: percent
    most = int(ours["edits"].max()) if len(ours) else 0
    ours = ours[ours["edits"].isin({0, most})].drop_duplicates(["method", "edits", "metric"], keep="first")
    comp = []
    for (method, edits), g in ours.groupby(["method", "edits"], sort=False):
        row = {"Source": "ours", "Model": model, "Method": "unedited" if edits == 0 else str(method),
               "Edits": f"{int(edits):,}"}
        for r in g.itertuples():
            row[r.metric] = f"{r.mean * scale:.1f} [{r.ci_low * scale:.1f}, {r.ci_high * scale:.1f}]"
        comp.append(row)
    comp = pd.DataFrame(comp).drop_duplicates(["Method", "Edits"])
    q = quoted[(quoted["model"] == "LLaMA3-8B") & (quoted["dataset"] == "CounterFact")
               & quoted["metric"].isin(["efficacy", "generalization", "specificity"])]
    for method, g in q.groupby("method", sort=False):
        row = {"Source": "quoted", "Model": "LLaMA3-8B", "Method": method,
               "Edits": "0" if method == "unedited" else "2,000"}
        row.update({r.metric: f"{r.value:.2f}" for r in g.itertuples()})
        comp = pd.concat([comp, pd.DataFrame([row])], ignore_index=True)
    cols = ["Source", "Model", "Method", "Edits", "efficacy", "generalization", "specificity"]
    comp = comp.reindex(columns=cols).fillna("")
    display(Markdown(
        f"Ours: `results/{model}/edit_count/metrics_by_edits.csv` (official family, mean and 95% CI"
        + (", ×100" if scale == 100.0 else "") + "); quoted: AlphaEdit paper, Table 1."
    ))
    display(Markdown(md_table(comp)))
else:
    display(Markdown(f"No `results/{model}/edit_count/metrics_by_edits.csv` yet: the comparison appears once the "
                     "`edit_count` notebook has run."))

"""How the book presents the executed notebooks: which code is hidden, which outputs the book replaces with tables
it builds from the same results files, and which outputs are numbered figures (caption, label, alt text).

The presentation of a cell is its tags (myst-nb's `hide-input`, `remove-output`, ...; the book's own
`study-after-<block>` and `study-figure-only`) and its `mystnb` metadata (figure caption and name, image alt
text). It is decided, for each cell of an executed notebook, by the first of these that has any:

1. the source notebook (`notebooks/<name>.py`, jupytext): the cell with the same source, whose presentation is
   copied; the notebooks' own tags always win;
2. OVERLAY below, for notebooks whose source does not carry its presentation yet (edit_count): cells matched by
   a regular expression on their first line;
3. the cell's presentation as it is in the executed notebook (e.g. synced earlier);

and then the defaults: papermill's parameters and injected-parameters cells are removed, every other code cell
keeps its outputs and hides its code behind a toggle (`hide-input`).

`present()` changes metadata only. Two places use it: book/_ext/study_book.py applies it in memory when the book
is built, so a freshly executed notebook renders right at once; scripts/sync_cell_metadata.py writes it into the
executed notebooks under results/ (metadata only, outputs untouched), so that they read the same in Jupyter.
`render_view()`, used only in memory at build time, then inserts the book's generated blocks after the cells
tagged `study-after-<block>` and keeps only the image outputs of cells tagged `study-figure-only`.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

PRESENTATION_TAGS = {"hide-input", "hide-output", "hide-cell", "remove-input", "remove-output", "remove-cell",
                     "remove-stderr", "full-width", "margin", "scroll-output", "study-figure-only"}
INPUT_TAGS = {"hide-input", "remove-input", "remove-cell", "hide-cell"}
PARAMETER_TAGS = {"parameters", "injected-parameters"}


def _figure(name: str, caption: str, alt: str) -> dict:
    return {"mystnb": {"figure": {"name": name, "caption": caption}, "image": {"alt": alt}}}


# Presentation for notebooks whose source (notebooks/<name>.py) does not carry it yet, by the first line of the
# cell. Remove an entry once the source notebook carries the same tags and metadata: the source wins anyway.
OVERLAY: dict[str, list[tuple[str, dict]]] = {
    "edit_count": [
        (r"^import hashlib", {"tags": ["hide-input", "remove-output", "study-after-chapter-settings"]}),
        (r"^raw = pd\.concat", {"tags": ["hide-input", "study-figure-only", "study-after-accuracy-table",
                                          "study-after-seen-accuracy"],
                                **_figure(
            "fig-accuracy-vs-edits",
            "Accuracy against the number of sequential edits, AlphaEdit and MEMIT from the same weights. One panel "
            "per measure: the official probability comparison (efficacy, generalisation, specificity), EasyEdit's "
            "teacher-forced token accuracy (rewrite_acc, rephrase_acc, locality) and exact match of a greedy "
            "answer. Lines are means over the evaluated records, bands their 95% confidence intervals; 0 edits is "
            "the unedited model. Look at where each line leaves its first-milestone level, and at how differently "
            "the two families fall.",
            "A grid of small line charts, one per measure, each plotting the mean score (vertical axis) against "
            "the number of sequential edits (horizontal axis) for AlphaEdit and MEMIT, with shaded confidence "
            "bands.")}),
        (r"^diag = pd\.concat", {"tags": ["hide-input", "study-figure-only", "study-after-diagnostics-table",
                                          "study-after-seen-diagnostics"],
                                 **_figure(
            "fig-edit-diagnostics",
            "What goes with the loss of accuracy, per edit batch and edited layer (line style), for each method "
            "(colour), on log scales: the relative size of the accumulated weight change ‖W − W⁰‖/‖W⁰‖, the "
            "condition number of the linear system solved for each update, and the drift of the edited layers' "
            "outputs on held-out preserved keys. Look for the batch where a curve bends upward.",
            "Three line charts side by side sharing the horizontal axis, number of edits: relative weight change, "
            "condition number and drift on logarithmic vertical axes, one line per method and layer, with a "
            "legend of methods and layers to the right.")}),
        (r"^onset = pd\.DataFrame", {"tags": ["hide-input", "remove-output", "study-after-onsets-table"]}),
        (r"^raw_edited = raw\[", {"tags": ["hide-input", "study-figure-only", "study-after-seen-paired"], **_figure(
            "fig-paired-differences",
            "AlphaEdit − MEMIT on the same evaluated records at each milestone, one panel per measure: the mean "
            "per-record difference with its paired bootstrap 95% interval, and the zero line (no difference). "
            "Above zero AlphaEdit scores higher; for every measure shown higher is better. An interval that "
            "crosses zero is no evidence of a difference.",
            "A grid of small charts, one per measure, each plotting the paired difference AlphaEdit minus MEMIT "
            "(vertical axis) against the number of edits (horizontal axis) as points with interval bars, around a "
            "horizontal zero line.")}),
        (r"^def tidy\(", {"tags": ["hide-input", "study-figure-only", "study-after-seen-capability"], **_figure(
            "fig-capability",
            "General capability and hidden representations against the number of edits. Left: perplexity on two "
            "held-out text sources the statistics never saw (fortunes, WordNet glosses), per method. Right: the "
            "mean relative distance of each edited model's hidden states from the unedited model's on the same "
            "tokens, at the last edited layer, the middle layer and the last layer. Lower is better in both.",
            "Two line charts side by side against the number of edits: perplexity per method and text source on "
            "the left, relative hidden-state distance per method and layer on the right.")}),
        (r"^def value\(", {"tags": ["hide-input", "remove-output", "study-after-chapter-verdicts"]}),
    ],
}


def _key(cell: dict) -> tuple[str, str]:
    src = cell.get("source", "")
    src = "".join(src) if isinstance(src, list) else src
    return cell.get("cell_type", ""), "\n".join(line.rstrip() for line in src.strip().splitlines())


def _is_presentation(tag: str) -> bool:
    return tag in PRESENTATION_TAGS or tag.startswith("study-after-")


def _presentation(meta: dict) -> dict | None:
    """The presentation part of a cell's metadata: {"tags": [...], "mystnb": {...}} or None if it has none."""
    tags = [t for t in meta.get("tags", []) if _is_presentation(t)]
    if not tags and "mystnb" not in meta:
        return None
    out = {"tags": tags}
    if "mystnb" in meta:
        out["mystnb"] = copy.deepcopy(meta["mystnb"])
    return out


def _overlay(name: str, cell: dict) -> dict | None:
    first = _key(cell)[1]
    for pattern, pres in OVERLAY.get(name, []):
        if cell.get("cell_type") == "code" and re.search(pattern, first):
            return copy.deepcopy(pres)
    return None


def source_presentation(source_nb: dict | None) -> dict[tuple[str, str], dict]:
    """Presentation of every cell of a source notebook, by (cell type, source)."""
    out = {}
    for cell in (source_nb or {}).get("cells", []):
        out[_key(cell)] = _presentation(cell.get("metadata", {})) or {"tags": []}
    return out


def present(nb: dict, name: str, source_nb: dict | None = None) -> dict:
    """A copy of the executed notebook `nb` (a dict as nbformat writes it) with the presentation metadata of its
    cells decided as described in the module docstring. Outputs and sources are not touched."""
    nb = copy.deepcopy(nb)
    from_source = source_presentation(source_nb)
    for cell in nb.get("cells", []):
        meta = cell.setdefault("metadata", {})
        own = _presentation(meta)
        src = from_source.get(_key(cell))
        if src is not None and (src["tags"] or "mystnb" in src):
            pres = src
        else:
            pres = _overlay(name, cell) or own or {"tags": []}
        keep = [t for t in meta.get("tags", []) if not _is_presentation(t)]
        tags = keep + [t for t in pres["tags"] if t not in keep]
        if cell.get("cell_type") == "code":
            if PARAMETER_TAGS & set(tags) and "remove-cell" not in tags:
                tags.append("remove-cell")
            if not INPUT_TAGS & set(tags):
                tags.append("hide-input")
        meta["tags"] = tags
        if "mystnb" in pres:
            meta["mystnb"] = pres["mystnb"]
        else:
            meta.pop("mystnb", None)
    return nb


def render_view(nb: dict, chapter: str) -> dict:
    """What the book renders (in memory only): the generated block after each cell tagged `study-after-<block>`,
    and only the image outputs of cells tagged `study-figure-only` (their tables are generated blocks)."""
    nb = copy.deepcopy(nb)
    cells = []
    with_ids = any("id" in c for c in nb.get("cells", []))
    for i, cell in enumerate(nb.get("cells", [])):
        tags = cell.get("metadata", {}).get("tags", [])
        if "study-figure-only" in tags:
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if o.get("output_type") not in ("display_data", "execute_result")
                               or any(k.startswith("image/") for k in o.get("data", {}))]
        cells.append(cell)
        for tag in tags:
            if tag.startswith("study-after-"):
                block = tag[len("study-after-"):]
                new = {"cell_type": "markdown", "metadata": {"tags": ["study-generated"]},
                       "source": f"```{{study}} {block}\n:chapter: {chapter}\n```\n"}
                if with_ids:
                    new["id"] = f"study-{i}-{block}"
                cells.append(new)
    nb["cells"] = cells
    return nb


def read_source(notebooks: Path, name: str) -> dict | None:
    """notebooks/<name>.py (jupytext percent format) as a notebook dict, or None."""
    path = notebooks / f"{name}.py"
    if not path.is_file():
        return None
    import json

    import jupytext

    return json.loads(json.dumps(jupytext.read(path)))

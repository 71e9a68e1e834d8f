"""Copy the book's cell presentation (tags, figure captions) into the executed notebooks under results/.

    .venv/bin/python scripts/sync_cell_metadata.py            # every results/**/<name>/<name>.ipynb
    .venv/bin/python scripts/sync_cell_metadata.py --check    # only report which notebooks are out of date
    .venv/bin/python scripts/sync_cell_metadata.py results/smollm2-135m-instruct/edit_count/edit_count.ipynb

For each cell of an executed notebook, the presentation (myst-nb tags such as hide-input / remove-output, the
book's study-after-<block> tags, and the `mystnb` figure and image metadata) is taken from the cell with the same
source in notebooks/<name>.py, else from the book's overlay for notebooks that do not carry it yet
(book/_ext/cell_presentation.py, OVERLAY), and papermill's parameter cells are marked remove-cell. Only cell
metadata changes: the script refuses to write a notebook whose sources or outputs would differ. The book applies
the same rules in memory when it is built, so this script is for people who open the executed notebooks in
Jupyter; a re-executed notebook gets the tags from its source anyway.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import cell_presentation  # noqa: E402


def content(nb: dict) -> list:
    """What must not change: every cell's type, source and outputs."""
    return [(c.get("cell_type"), c.get("source"), c.get("outputs")) for c in nb.get("cells", [])]


def sync(path: Path, notebooks: Path, check: bool) -> bool:
    """Returns True when the notebook's metadata was (or, with check, would be) changed."""
    import nbformat

    name = path.stem
    nb = nbformat.read(path, as_version=4)
    before = json.loads(json.dumps(nb))
    after = cell_presentation.present(before, name, cell_presentation.read_source(notebooks, name))
    if content(after) != content(before):
        raise RuntimeError(f"{path}: presentation would change sources or outputs; nothing written")
    if after == before:
        return False
    if not check:
        nbformat.write(nbformat.from_dict(after), path)
    return True


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path)


def still_executing(path: Path) -> bool:
    """True for a notebook that papermill started and has not finished (no end time): a long stream still running,
    or one that was killed and will be executed again."""
    meta = json.loads(path.read_text()).get("metadata", {}).get("papermill")
    return isinstance(meta, dict) and bool(meta.get("start_time")) and not meta.get("end_time")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="executed notebooks (default: all under results/)")
    ap.add_argument("--check", action="store_true", help="report notebooks out of date; exit 1 if any")
    ap.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="the source notebooks")
    args = ap.parse_args(argv)
    paths = args.paths or sorted(p for p in (ROOT / "results").rglob("*.ipynb")
                                 if p.parent.name == p.stem and ".ipynb_checkpoints" not in p.parts)
    running = [p for p in paths if still_executing(p)]  # papermill is writing it: its next save would win anyway
    for p in running:
        print("skipped, papermill has not finished it: " + shown(p))
    changed = [p for p in paths if p not in running and sync(p, args.notebooks, args.check)]
    for p in changed:
        print(("out of date: " if args.check else "updated: ") + shown(p))
    print(f"{len(changed)} of {len(paths)} executed notebooks {'out of date' if args.check else 'updated'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())

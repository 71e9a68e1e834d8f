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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="executed notebooks (default: all under results/)")
    ap.add_argument("--check", action="store_true", help="report notebooks out of date; exit 1 if any")
    ap.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="the source notebooks")
    args = ap.parse_args(argv)
    paths = args.paths or sorted(p for p in (ROOT / "results").rglob("*.ipynb")
                                 if p.parent.name == p.stem and ".ipynb_checkpoints" not in p.parts)
    changed = [p for p in paths if sync(p, args.notebooks, args.check)]
    for p in changed:
        print(("out of date: " if args.check else "updated: ") + str(p.relative_to(ROOT) if p.is_absolute() else p))
    print(f"{len(changed)} of {len(paths)} executed notebooks {'out of date' if args.check else 'updated'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The main job: run the study's notebooks through papermill for one model, then build the book.

    python -m alphaedit_core.study --model smollm2-135m-instruct            # the full study (hours on 2 cores)
    python -m alphaedit_core.study --model smollm2-135m-instruct --quick    # minutes: small runs, own folder

Executed notebooks, tables and figures go to `results/<model>/<notebook>/` (`results/quick/<model>/...` with
--quick, so a quick run never overwrites the full results the book shows). Long notebooks checkpoint after every
edit batch: running the same command again resumes them. The paired `.ipynb` of each notebook is refreshed from
its jupytext `.py` before it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("projection_check", "edit_count", "metric_definitions", "operating_points")
LEDGER = "claims_ledger"

PROFILES: dict[str, dict[str, dict]] = {
    "full": {
        "projection_check": {},
        "edit_count": {},
        "metric_definitions": {},
        "operating_points": {},
    },
    "quick": {
        "projection_check": dict(n_edits=10, batch_size=10, heldout_tokens=2000, other_corpus_docs=8,
                                 overrides=dict(mom2_n_tokens=20_000)),
        "edit_count": dict(n_edits=40, batch_size=20, milestones=[20, 40], eval_cap=40, gen_cap=10, drift_tokens=500,
                           overrides=dict(mom2_n_tokens=20_000)),
        "metric_definitions": dict(n_edits=20, batch_size=10, fluency_cap=3, overrides=dict(mom2_n_tokens=20_000)),
        "operating_points": dict(n_edits=20, batch_size=10, thresholds=[0.02, 0.005], energies=[0.1, 0.01],
                                 l2s=[100.0], memit_lambdas=[1500.0], clamps=[], seeds=[], migration_preset="",
                                 probe_tokens=1000, overrides=dict(mom2_n_tokens=20_000)),
    },
}


def sync_pair(name: str, notebooks: Path) -> Path:
    """Write `<name>.ipynb` from `<name>.py` (jupytext percent) and return its path. An unchanged pair keeps its
    file; a changed one keeps the ids of its cells that are still there (`carry_cell_ids`), so that the diff of an
    edit shows the edit."""
    import jupytext

    nb = jupytext.read(notebooks / f"{name}.py")
    path = notebooks / f"{name}.ipynb"

    def cells(notebook) -> list:
        return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in notebook.cells]

    old = jupytext.read(path) if path.exists() else None
    if old is None or cells(old) != cells(nb):
        if old is not None:
            carry_cell_ids(old.cells, nb.cells)
        jupytext.write(nb, path)
    return path


def carry_cell_ids(old: list, new: list) -> None:
    """Give the cells of `new` the ids of their counterparts in `old` (in place): cells equal in type and source,
    matched in order (difflib); within a run of changed cells, cells of the same type matched in order (an edited
    cell keeps its id). Inserted cells keep their fresh ids; no old id is given twice."""
    import difflib

    def matches(a: list, b: list):
        return difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()

    for tag, i1, i2, j1, j2 in matches([(c.cell_type, c.source) for c in old], [(c.cell_type, c.source) for c in new]):
        if tag == "equal":
            pairs = zip(range(i1, i2), range(j1, j2))
        elif tag == "replace":  # the changed run: pair its cells by type, in order
            pairs = [(i1 + a, j1 + b) for t, a1, a2, b1, b2 in matches([c.cell_type for c in old[i1:i2]],
                                                                        [c.cell_type for c in new[j1:j2]])
                     if t == "equal" for a, b in zip(range(a1, a2), range(b1, b2))]
        else:
            continue
        for i, j in pairs:
            if "id" in old[i]:
                new[j]["id"] = old[i]["id"]


def write_provenance(out_dir: Path, name: str, parameters: dict, started: float, status: str,
                     extra: dict | None = None) -> Path:
    """Record what produced an executed notebook in `out_dir/provenance.json` (read by the book's Reproduce page):
    git commit and whether the code had uncommitted changes, times, parameters, versions, machine, wall time."""
    import datetime
    import json
    import platform
    from importlib import metadata

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    def iso(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")

    versions = {}
    for package in ("torch", "transformers", "numpy", "pandas", "papermill", "jupytext"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results").splitlines()
    finished = time.time()
    record = dict(notebook=name, status=status, git_commit=git("rev-parse", "HEAD") or None,
                  git_dirty=bool(dirty), git_dirty_files=[line[3:] for line in dirty][:50],
                  started_at=iso(started), finished_at=iso(finished), wall_seconds=round(finished - started, 1),
                  parameters=parameters, python=platform.python_version(), versions=versions,
                  machine=dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count()),
                  **(extra or {}))
    path = out_dir / "provenance.json"
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return path


def run_notebook(name: str, parameters: dict, out_dir: Path, notebooks: Path, timeout: int | None = None,
                 provenance_extra: dict | None = None) -> Path:
    """Execute one notebook with papermill into `out_dir/<name>.ipynb`; record its provenance.json next to it.
    A completed notebook then gets the book's cell presentation (scripts/sync_cell_metadata.py: tags, figure
    captions, the injected parameters hidden), so the file committed under results/ is already up to date."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    started, status = time.time(), "failed"
    try:
        papermill.execute_notebook(str(sync_pair(name, notebooks)), str(output), parameters=parameters,
                                   cwd=str(notebooks), kernel_name="python3", progress_bar=True,
                                   execution_timeout=timeout)
        status = "completed"
    finally:
        write_provenance(out_dir, name, parameters, started, status, provenance_extra)
    present = ROOT / "scripts" / "sync_cell_metadata.py"
    if present.exists():
        done = subprocess.run([sys.executable, str(present), "--notebooks", str(notebooks), str(output)],
                              stdout=subprocess.DEVNULL)
        if done.returncode:  # the notebook is written and valid; only its presentation is behind
            print(f"WARNING: {present.name} failed on {output}; run it by hand before committing", flush=True)
    return output


def _one_thread_env(jobs: int, threads: int | None = None) -> dict:
    """The environment of `jobs` processes sharing the cores (`threads` each when given)."""
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _papermill_cmd(source: Path, output: Path, params: dict, cwd: Path) -> list[str]:
    """A command that executes `source` into `output` with `params` (passed as JSON: papermill's `-y` reads YAML,
    in which `2e-05` is a string, not a number)."""
    import json

    script = ("import json, sys, papermill; papermill.execute_notebook(sys.argv[1], sys.argv[2], "
              "parameters=json.loads(sys.argv[3]), cwd=sys.argv[4], kernel_name='python3', progress_bar=False)")
    return [sys.executable, "-c", script, str(source), str(output), json.dumps(params), str(cwd)]


def _papermill_all(cmds: list[list[str]], env: dict, what: str) -> None:
    procs = [subprocess.Popen(cmd, env=env) for cmd in cmds]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"{what} failed with exit codes {codes}")


def run_methods_in_parallel(params: dict, notebooks: Path, jobs: int) -> None:
    """Run edit_count once per method in parallel processes (the per-method tables and checkpoints they leave
    are then picked up, not recomputed, by the rendering run)."""
    from .paths import cache_dir

    methods = params.get("methods", ["alphaedit", "memit"])
    source = sync_pair("edit_count", notebooks)
    cmds = [_papermill_cmd(source, cache_dir("runs", "partial") / f"edit_count-{method}.ipynb",
                           {**params, "methods": [method]}, notebooks) for method in methods]
    _papermill_all(cmds, _one_thread_env(min(jobs, len(methods))), "edit_count per-method runs")


def worker_notebook(name: str, notebooks: Path, tag: str, dest: Path) -> Path:
    """`<name>.ipynb` cut after its first cell tagged `tag` (the work loop), written to `dest`: what a worker
    runs. Raises ValueError when no cell has the tag."""
    import nbformat

    nb = nbformat.read(sync_pair(name, notebooks), as_version=4)
    ends = [i for i, c in enumerate(nb.cells) if tag in c.get("metadata", {}).get("tags", [])]
    if not ends:
        raise ValueError(f"{name}: no cell tagged {tag!r}, so there is no work loop to run in parallel")
    nb.cells = nb.cells[:ends[0] + 1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


def run_sweep_in_parallel(params: dict, notebooks: Path, jobs: int) -> None:
    """Run operating_points' settings loop in `jobs` worker processes (one thread each on two cores): every
    worker executes the notebook up to its loop, claims a setting before running it and skips those another
    worker holds. The rendering run then finds the settings done (and runs any a worker left). Before the workers,
    one process with every thread runs the notebook up to its cell tagged `shared-setup` (the second-moment
    statistics of every text the sweep uses), so that the workers read them from the cache instead of each
    computing the same matrices on one thread."""
    from .paths import cache_dir

    partial = cache_dir("runs", "partial")
    setup = worker_notebook("operating_points", notebooks, "shared-setup", partial / "operating_points-setup.ipynb")
    _papermill_all([_papermill_cmd(setup, partial / "operating_points-setup-run.ipynb", params, notebooks)],
                   dict(os.environ), "operating_points set-up")
    source = worker_notebook("operating_points", notebooks, "sweep-loop", partial / "operating_points-loop.ipynb")
    cmds = [_papermill_cmd(source, partial / f"operating_points-worker{i}.ipynb", params, notebooks)
            for i in range(jobs)]
    _papermill_all(cmds, _one_thread_env(jobs), "operating_points workers")


def run_streams_in_lanes(params: dict, notebooks: Path, lanes: list[list[str]], threads: int | None = None,
                         tag: str = "lane") -> None:
    """Edit the collapse chapter's streams in parallel lanes, one process with one thread each (2,000-edit streams
    take hours: two one-thread lanes on two cores edit about 8% more per hour than one two-thread process,
    benchmarks/results/lanes_vs_threads-smollm2-135m-instruct.md).
    Lane i executes the chapter up to its cell tagged `stream-loop` with `run_streams=True` and
    `run_variants=lanes[i]`, its streams one after the other, each resuming from its checkpoints. Every stream
    writes its own folder and checkpoints, so the lanes never share one; a stream named in two lanes is refused.
    `threads` per lane (default: the cores shared between the lanes); `tag` names the lanes' notebooks in the
    cache (`runs/partial/collapse-<tag><i>.ipynb`), so that calls running at the same time keep their logs apart.
    Renders nothing: execute the chapter afterwards (`run_streams=False`) to read what the lanes wrote."""
    from .paths import cache_dir

    named = [v for lane in lanes for v in lane]
    if not named or any(not lane for lane in lanes):
        raise ValueError(f"lanes {lanes}: every lane needs at least one stream")
    twice = sorted({v for v in named if named.count(v) > 1})
    if twice:
        raise ValueError(f"streams {twice} are in more than one lane: two runs would write one checkpoint")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", tag):
        raise ValueError(f"tag {tag!r}: letters, digits, '-' and '_' only (it names files)")
    partial = cache_dir("runs", "partial")
    source = worker_notebook("collapse", notebooks, "stream-loop", partial / f"collapse-{tag}s.ipynb")
    cmds = [_papermill_cmd(source, partial / f"collapse-{tag}{i}.ipynb",
                           {**params, "run_streams": True, "run_variants": lane}, notebooks)
            for i, lane in enumerate(lanes)]
    _papermill_all(cmds, _one_thread_env(len(lanes), threads), "collapse stream lanes")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="offline short name, hub id or local folder")
    ap.add_argument("--quick", action="store_true", help="small runs that finish in minutes")
    ap.add_argument("--only", default=",".join(NOTEBOOKS), help="comma-separated notebooks to run")
    ap.add_argument("--results", default=str(ROOT / "results"), help="results root")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1,
                    help="edit_count: run each method in its own process first; operating_points: run the settings "
                         "in JOBS worker processes first (threads split between them); then render")
    ap.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                    help="edit_count, operating_points: start no new edit batch (or setting) after MIN minutes; "
                         "the tables then show the work done so far and the same command resumes it later")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                    help="set a notebook parameter (JSON value, e.g. 'thresholds=[]' or 'corpora=[\"wordnet\"]') "
                         "for every notebook run; repeat for several")
    ap.add_argument("--no-book", action="store_true", help="do not build the book at the end")
    args = ap.parse_args(argv)
    extra_params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            ap.error(f"--param {item!r}: expected NAME=JSON")
        try:
            extra_params[name] = json.loads(value)
        except json.JSONDecodeError as e:
            ap.error(f"--param {item!r}: the value is not JSON ({e}); quote strings: {name}='\"text\"'")

    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - set(NOTEBOOKS))
    if unknown:
        ap.error(f"unknown notebook(s) {unknown}; choose from {NOTEBOOKS}")
    profile = PROFILES["quick" if args.quick else "full"]
    root = Path(args.results) / "quick" if args.quick else Path(args.results)
    model_dir = args.model.replace("/", "--")
    notebooks = ROOT / "notebooks"
    rel = os.path.relpath(root.resolve(), notebooks)  # the notebooks run in notebooks/
    if extra_params:  # a misspelt parameter would silently change nothing: refuse it
        import papermill

        for name in only:
            known = set(papermill.inspect_notebook(str(sync_pair(name, notebooks))))
            if set(extra_params) - known:
                ap.error(f"--param {sorted(set(extra_params) - known)}: not parameters of {name} "
                         f"(its parameters: {', '.join(sorted(known))})")
    for name in only:
        params = dict(model=args.model, seed=args.seed, results_dir=rel, quick=args.quick,
                      **{**profile[name], **extra_params})
        if name in ("edit_count", "operating_points") and args.time_budget is not None:
            params["time_budget_min"] = args.time_budget
        print(f"== {name}: {params}", flush=True)
        extra = None
        if name in ("edit_count", "operating_points") and args.jobs > 1:
            parallel_started = time.time()
            if name == "edit_count":
                run_methods_in_parallel(params, notebooks, args.jobs)
            else:
                run_sweep_in_parallel(params, notebooks, args.jobs)
            extra = dict(parallel_jobs=args.jobs, parallel_runs_wall_seconds=round(time.time() - parallel_started, 1))
            if args.time_budget is not None:
                params["time_budget_min"] = 0  # the rendering run only renders what the parallel runs left
        # a notebook run under a label writes its tables to results/<label>/<notebook>/: its executed copy goes there
        run_notebook(name, params, root / (params.get("label") or model_dir) / name, notebooks,
                     provenance_extra=extra)
    if extra_params.get("label"):  # a side run of another model (e.g. C3's): the default model's ledger reads it
        print(f"results in {root / extra_params['label']}; the ledger is not rerun for a labelled run "
              f"(--model <default model> --only '' rebuilds it)")
        return
    run_notebook(LEDGER, dict(results_root=rel, model=model_dir), root / model_dir / LEDGER,
                 notebooks)
    print(f"results in {root / model_dir}")
    if not args.no_book:
        build_book(root / model_dir)


def build_book(model_results: Path) -> Path:
    """Build the book over one model's results. The committed table of contents shows the default model's full
    run; for another model or a quick run, a table of contents pointing at its results is written next to them
    and the HTML goes to book/_build/<model folder>/."""
    book = ROOT / "book"
    jb = str(Path(sys.executable).parent / "jupyter-book")
    rel = os.path.relpath(model_results.resolve(), (book / "results").resolve())
    toc = (book / "_toc.yml").read_text()
    default = "results/smollm2-135m-instruct/"
    if rel == "smollm2-135m-instruct":
        subprocess.run([jb, "build", str(book)], check=True)
        return book / "_build" / "html"
    toc_path = model_results / "_toc.yml"
    toc_path.write_text(toc.replace(default, f"results/{rel}/").replace("(SmolLM2-135M-Instruct)", f"({rel})"))
    out = book / "_build" / rel.replace("/", "-")
    subprocess.run([jb, "build", str(book), "--toc", str(toc_path), "--path-output", str(out)], check=True)
    return out / "_build" / "html"


if __name__ == "__main__":
    main()

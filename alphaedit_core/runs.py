"""What a resumable study run keys its checkpoints and tables by, and the unedited baseline it shares.

A run key names one stream: the unedited model (its fingerprint), the number of edits, the batch size, the seed, the
hyperparameters and the records. Tables that a run appends to carry its key in a `run_key` column, so rows of
another run are never extended or taken for this run's progress. The unedited model's argmax tokens on the
records (EasyEdit's locality reference) depend only on the model and the records: one file per pair, shared by every
method, variant and notebook. A long computation made of independent parts (a milestone's evaluation, record chunk by
record chunk) keeps each part's tables as it finishes them (`in_parts`), so an interrupted one resumes by parts."""
from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from .checkpoint import CheckpointBusy, WriterLock, digest, request_sha256
from .paths import cache_dir, write_whole
from .requests import EditRequest


def data_digest(requests: Sequence[EditRequest]) -> str:
    """Short sha256 of the requests, in order (each by `checkpoint.request_sha256`)."""
    return hashlib.sha256("".join(request_sha256(r) for r in requests).encode()).hexdigest()[:10]


def run_key(fingerprint: str, n_edits: int, batch_size: int, seed: int, hparams: Mapping[str, Any],
            requests: Sequence[EditRequest]) -> str:
    """'<model>-n<edits>-b<batch>-s<seed>-<hparams digest>-<data digest>'."""
    return f"{fingerprint}-n{n_edits}-b{batch_size}-s{seed}-{digest(dict(hparams))}-{data_digest(requests)}"


RUN_KEY = re.compile(r"^(?P<model>[0-9a-f]+)-n(?P<n_edits>\d+)-b(?P<batch_size>\d+)-s(?P<seed>-?\d+)"
                     r"-(?P<hparams>[0-9a-f]+)-(?P<data>[0-9a-f]+)$")


def run_key_parts(key: str) -> dict[str, str]:
    """A run key in its parts: model, n_edits, batch_size, seed, hparams, data (strings)."""
    m = RUN_KEY.match(str(key))
    if not m:
        raise ValueError(f"not a run key: {key!r}")
    return m.groupdict()


def cached_baseline(lm, tok, records: list[dict], fingerprint: str, requests: Sequence[EditRequest],
                    progress: bool = True) -> dict:
    """`metrics.compute_baseline` of the unedited model on `records`, read from or written to the shared cache
    (`runs/unedited/baseline-<model>-<data digest>.json`). One process computes it: another that asks meanwhile
    waits for it (an exclusive lock) and reads the file, instead of computing the same baseline on its own core."""
    from .metrics import compute_baseline

    path = cache_dir("runs", "unedited") / f"baseline-{fingerprint}-{data_digest(requests)}.json"
    if path.exists():
        return json.loads(path.read_text())
    with table_lock(path):
        if path.exists():  # computed by the process that held the lock
            return json.loads(path.read_text())
        baseline = compute_baseline(lm, tok, records, progress=progress)
        write_whole(path, lambda tmp: tmp.write_text(json.dumps(baseline)))
    return baseline


@contextmanager
def table_lock(path: str | Path, shared: bool = False):
    """Hold an `flock` on `<path>.lock` (exclusive to write, shared to read) for the block: several worker
    processes append to one table, and a reader never sees half a row. Without `fcntl` (not POSIX) it locks
    nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim(path: str | Path) -> WriterLock | None:
    """The exclusive right to work on the unit named `path` (a lock on `<path>.lock`, held until `release()` or
    the end of the process), or None when another process holds it: how parallel workers share a list of
    settings without doing one twice."""
    try:
        return WriterLock(path).acquire()
    except CheckpointBusy:
        return None


def cached_tables(folder: str | Path, names: Sequence[str], compute: Callable[[], Sequence[pd.DataFrame]], *,
                  wait: bool = True) -> tuple[pd.DataFrame, ...] | None:
    """The tables `names` (`<folder>/<name>.csv`), computed once by `compute` (one frame per name) in whichever
    process asks first and read from the files by every later caller. The computing process holds a lock on them:
    another process that asks meanwhile waits and then reads them (`wait`), or gets None (`wait=False`, so that it
    can do other work first and ask again), instead of computing them a second time. A process that died while
    computing leaves no table behind (each file is written whole, by a rename): the next caller computes them."""
    folder = Path(folder)
    paths = [folder / f"{name}.csv" for name in names]

    def read() -> tuple[pd.DataFrame, ...] | None:
        return tuple(pd.read_csv(p) for p in paths) if all(p.exists() for p in paths) else None

    if (found := read()) is not None:
        return found
    key = folder / ("computing-" + "-".join(names))
    lock = claim(key)
    if lock is None:
        if not wait:
            return None
        with table_lock(key):  # until the computing process is done (or dead)
            pass
        return cached_tables(folder, names, compute, wait=wait)
    try:
        if (found := read()) is not None:  # finished between the first look and the claim
            return found
        frames = tuple(compute())
        if len(frames) != len(paths):
            raise ValueError(f"cached_tables: compute returned {len(frames)} tables for {list(names)}")
        for path, frame in zip(paths, frames):
            write_whole(path, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
        return frames
    finally:
        lock.release()


class RunTables:
    """Append-only CSV tables of one run: each row carries the run key. Appends and reads hold the table's lock,
    so parallel workers of one run may share its tables."""

    def __init__(self, key: str, what: str = "run"):
        self.key, self.what = key, what

    def append(self, path: Path, frame: pd.DataFrame) -> None:
        with table_lock(path):
            empty = not Path(path).exists() or Path(path).stat().st_size == 0
            frame.assign(run_key=self.key).to_csv(path, mode="a", header=empty, index=False)

    def check(self, path: Path) -> None:
        """Refuse a table holding rows of another run (other model, records, hparams, batch size or seed)."""
        if Path(path).exists():
            with table_lock(path, shared=True):
                keys = set(pd.read_csv(path).get("run_key", pd.Series(["(none)"])).astype(str))
            if keys != {self.key}:
                raise ValueError(f"{path} holds rows of another run (run_key {sorted(keys)}); this run is "
                                 f"{self.key}. Move the old tables away before starting a new {self.what}.")

    @staticmethod
    def done(path: Path, *columns: str) -> set:
        """Values (one column) or tuples (several) already written: what a resumed run must not redo."""
        if not Path(path).exists():
            return set()
        with table_lock(path, shared=True):
            t = pd.read_csv(path, usecols=list(columns))[list(columns)]  # usecols keeps the file's column order
        return set(t[columns[0]]) if len(columns) == 1 else set(map(tuple, t.itertuples(index=False)))


def in_parts(folder: str | Path, name: str, parts: Sequence[Callable[[], pd.DataFrame | Sequence[pd.DataFrame]]],
             n_tables: int = 1) -> tuple[pd.DataFrame, ...]:
    """The `n_tables` tables of a computation made of independent `parts`, each computed once: part i returns a
    frame (`n_tables` = 1) or a tuple of `n_tables` frames, written whole to `<folder>/<name>.part-<i>.<j>.pkl` (a
    pickle: column types come back as they were) as soon as it returns, and a later call with the same folder and name reads the parts already there instead of
    computing them again. Returns, for each table j, the concatenation of the parts' frames read back from their
    files, so a resumed computation returns what an uninterrupted one does. The caller removes the files with
    `drop_parts` once the whole is stored. `name` must identify the computation (its inputs and settings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tables: list[list[pd.DataFrame]] = [[] for _ in range(n_tables)]
    for i, compute in enumerate(parts):
        paths = [folder / f"{name}.part-{i:04d}.{j}.pkl" for j in range(n_tables)]
        if not all(p.exists() for p in paths):
            frames = compute()
            frames = (frames,) if isinstance(frames, pd.DataFrame) else tuple(frames)
            if len(frames) != n_tables:
                raise ValueError(f"in_parts: part {i} of {name!r} returned {len(frames)} tables, not {n_tables}")
            for path, frame in zip(paths, frames):
                write_whole(path, lambda tmp, frame=frame: frame.to_pickle(tmp, compression=None))
        for j, path in enumerate(paths):
            tables[j].append(pd.read_pickle(path, compression=None))
    return tuple(pd.concat(t, ignore_index=True) if t else pd.DataFrame() for t in tables)


def drop_parts(folder: str | Path, name: str) -> None:
    """Remove the part files of `in_parts(folder, name, ...)`."""
    for path in Path(folder).glob(f"{name}.part-*.pkl"):
        path.unlink(missing_ok=True)

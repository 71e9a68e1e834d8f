"""Checkpoints of a sequential edit stream that verify what they resume and survive a kill at any point.

Layout of a checkpoint folder:

    <checkpoint>/LATEST                       the name of the current version, replaced atomically
    <checkpoint>/v-000012/state.json          metadata: identity of the run + a sha256 of every tensor
    <checkpoint>/v-000012/state.safetensors   edited weights and cache_c
    <checkpoint>/snapshots/edits-000500.*     milestone snapshots (see `write_snapshot`)
    <checkpoint>/targets/b000012-*.safetensors the targets of the batch being edited, chunk by chunk (`TargetJournal`)

`write_version` writes a new version folder under a temporary name, fsyncs its files, renames it, then swaps
`LATEST` with `os.replace` (atomic) and only then removes older versions. Killed at any point, the folder holds
either the old version or the new one under `LATEST`, never neither; `recover` (run by the writer before every
write) removes what a kill left behind (`*.tmp`, versions `LATEST` does not name).

One writer at a time: `WriterLock` holds an exclusive `flock` on `<checkpoint>.lock` (beside the folder) for as long
as a run may write; a second writer is refused with `CheckpointBusy`, naming the holder. The kernel drops the lock
when its process dies, so a killed run leaves no stale lock. Readers (`exists`, `read_version`) take no lock and
change nothing: they read the version `LATEST` names (or, when a kill left no `LATEST`, the newest complete one),
so a chapter can be rendered from a stream that is still writing.

A run killed in the middle of a batch loses that batch's work, and most of it is the target optimisation (a batch
of 100 takes half an hour to two hours on two cores for the larger offline models): `TargetJournal` keeps each
finished chunk of targets, so the resumed batch optimises only the chunks it had not finished, with the same bits.

`verify_identity` compares a checkpoint's recorded identity with the resuming run's, field by field, and raises
`CheckpointMismatch` naming the field and both values.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file

FORMAT = "alphaedit_core.checkpoint"
VERSION = 2
LATEST = "LATEST"
STATE_JSON, STATE_TENSORS = "state.json", "state.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read: missing, truncated, corrupted or of an unknown format."""


class CheckpointMismatch(ValueError):
    """A checkpoint belongs to another run (other model, requests, batch size, hyperparameters, ...)."""


class CheckpointBusy(CheckpointError):
    """Another run is writing this checkpoint (it holds the writer lock), or wrote it since this run read it."""


SAVE_STEPS = ("tmp-created", "tensors-written", "meta-written", "tmp-synced", "version-renamed",
              "pointer-written", "pointer-swapped", "old-removed")


def _step(name: str) -> None:
    """Marks the end of one step of `write_version` (one of SAVE_STEPS); does nothing. The kill test replaces
    it, in a subprocess, with a function that kills the process at a chosen step."""


# ------------------------------------------------------------------------------------------------ identity
def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes (contiguous, on the CPU)."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def request_sha256(request: Any) -> str:
    """sha256 of an edit request's content: prompt, subject, targets and case id (so two requests that differ in
    anything, or carry no case id at all, are still told apart)."""
    fields = [request.prompt, request.subject, request.target_new, request.target_true,
              None if request.case_id is None else str(request.case_id)]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def digest(obj: Any) -> str:
    """Short sha256 (10 hex digits) of a JSON-able object, keys sorted."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def statistics_sha256(tensors: Iterable[torch.Tensor]) -> str:
    """One sha256 over several tensors (the second moments or projector bases a run uses)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(tensor_sha256(t).encode())
    return h.hexdigest()


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify_identity(path: Path, recorded: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise `CheckpointMismatch` for the first field whose recorded value differs from the expected one.
    `hparams` are compared field by field; all differing hparams are named."""
    for field, want in expected.items():
        have = recorded.get(field)
        if field == "hparams" and isinstance(have, dict) and isinstance(want, dict):
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            if diff:
                detail = "; ".join(f"{k}: checkpoint {_short(have.get(k))}, this run {_short(want.get(k))}"
                                   for k in diff)
                raise CheckpointMismatch(f"checkpoint {path} was made with other hparams ({detail})")
        elif have != want:
            hint = ("" if field != "statistics_sha256" else " (other second moments or projectors: another corpus, "
                    "token count, projector rule, or statistics computed on another machine or library version)")
            raise CheckpointMismatch(f"checkpoint {path} was made with {field}={_short(have)}; this run has "
                                     f"{field}={_short(want)}{hint}")


def verify_requests(path: Path, recorded: Sequence[str], requests: Sequence[Any]) -> None:
    """The checkpoint's edited requests must be, in order, the first ones of `requests`."""
    if len(recorded) > len(requests):
        raise CheckpointMismatch(f"checkpoint {path} holds {len(recorded)} edited requests; this run has only "
                                 f"{len(requests)}")
    for i, (have, r) in enumerate(zip(recorded, requests)):
        if have != request_sha256(r):
            raise CheckpointMismatch(
                f"checkpoint {path} holds edits of other requests: request {i} of this run (case_id "
                f"{r.case_id!r}, {r.prompt.format(r.subject)!r} -> {r.target_new!r}) has sha256 "
                f"{request_sha256(r)[:12]}, the checkpoint's request {i} has {have[:12]}")


# ------------------------------------------------------------------------------------------------ writing
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _current(root: Path) -> str | None:
    pointer = root / LATEST
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    return name or None


def _complete_versions(root: Path) -> list[str]:
    """Version folders that hold their metadata file, oldest first."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("v-") and not p.name.endswith(".tmp")
                  and (p / STATE_JSON).exists()) if root.is_dir() else []


def current_version(root: str | Path) -> str | None:
    """The name of the version a reader should read, without changing anything: the one `LATEST` names, or, when
    a kill left no `LATEST`, the newest complete version (the one `recover` would adopt); None when there is none."""
    root = Path(root)
    if not root.is_dir():
        return None
    return _current(root) or (_complete_versions(root) or [None])[-1]


class WriterLock:
    """The exclusive right to write the checkpoint at `root`: an `flock` on `<root>.lock`, held from `acquire` to
    `release` (or the end of the process). `acquire` raises `CheckpointBusy` naming the holder when another process
    (or another `WriterLock` of this one) holds it. Without `fcntl` (not POSIX) it locks nothing."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root.with_name(self.root.name + ".lock")
        self._file = None

    def acquire(self) -> "WriterLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that did not say"
            f.close()
            raise CheckpointBusy(f"checkpoint {self.root} is being written by another run ({holder}; lock "
                                 f"{self.path}): two runs must never write one checkpoint. Wait for it to end or "
                                 f"stop it; the lock goes with its process") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def recover(root: str | Path) -> None:
    """Remove what an interrupted `write_version` left: temporary folders and files, and versions other than
    the one `LATEST` names (when `LATEST` names none, the newest complete version is adopted first)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.endswith(".tmp"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    versions = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v-"))
    current = current_version(root)  # the version readers read: writer and readers agree on it
    if current is not None and _current(root) is None:  # killed before the first pointer swap completed: adopt it
        _write_pointer(root, current)
    for name in versions:
        if name != current:
            shutil.rmtree(root / name)


def _write_pointer(root: Path, name: str) -> None:
    tmp = root / f"{LATEST}.tmp"
    tmp.write_text(name + "\n")
    _fsync_file(tmp)
    _step("pointer-written")
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)
    _step("pointer-swapped")


def write_version(root: str | Path, number: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write version `number` (tensors + metadata with their checksums), make it current, drop the older ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recover(root)
    name = f"v-{number:06d}"
    tmp = root / f"{name}.tmp"
    tmp.mkdir()
    _step("tmp-created")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(tmp / STATE_TENSORS))
    _step("tensors-written")
    full = {"format": FORMAT, "version": VERSION, **meta,
            "checksums": {k: tensor_sha256(v) for k, v in tensors.items()}}
    (tmp / STATE_JSON).write_text(json.dumps(full, indent=1))
    _step("meta-written")
    for f in (STATE_TENSORS, STATE_JSON):
        _fsync_file(tmp / f)
    _fsync_dir(tmp)
    _step("tmp-synced")
    final = root / name
    if final.exists():  # a version of the same number that LATEST does not name was removed by recover()
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _step("version-renamed")
    _write_pointer(root, name)
    recover(root)
    _step("old-removed")
    return final


# ------------------------------------------------------------------------------------------------ reading
def exists(root: str | Path) -> bool:
    """Whether `root` holds a checkpoint (read only)."""
    return current_version(root) is not None


def _read_current(root: Path, read, retries: int):
    """`read(folder)` of the current version; when it fails because a writer replaced the version meanwhile (its
    old folder removed), read the new one, up to `retries` times. None when `root` holds no checkpoint."""
    for attempt in range(retries + 1):
        name = current_version(root)
        if name is None:
            return None
        try:
            return read(root / name)
        except CheckpointError:
            if attempt < retries and current_version(root) != name:  # replaced meanwhile: read the new one
                continue
            raise
    raise AssertionError("unreachable")


def read_meta(root: str | Path, retries: int = 5) -> dict[str, Any] | None:
    """The metadata of the current version (the version `read_version` would read), without its tensors; None when
    `root` holds no checkpoint. Read only, and read again when a writer replaces the version meanwhile."""
    return _read_current(Path(root), _read_meta_file, retries)


def read_version(root: str | Path, retries: int = 5) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and tensors of the current version, every tensor checked against its recorded sha256. Read only:
    when a writer replaces the version while it is read (its old folder is removed), it is read again, up to
    `retries` times."""
    result = _read_current(Path(root), _read_folder, retries)
    if result is None:
        raise CheckpointError(f"no checkpoint in {root}")
    return result


def _read_meta_file(folder: Path) -> dict[str, Any]:
    meta_path = folder / STATE_JSON
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint metadata {meta_path} cannot be read: {e}") from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {folder} has format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}; this code reads {FORMAT!r} version {VERSION}")
    return meta


def _read_folder(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta, tensor_path = _read_meta_file(folder), folder / STATE_TENSORS
    try:
        tensors = load_file(str(tensor_path))
    except Exception as e:  # safetensors raises its own error types for truncated or garbled files
        raise CheckpointError(f"checkpoint tensors {tensor_path} cannot be read: {e}") from e
    recorded = meta.get("checksums", {})
    if set(recorded) != set(tensors):
        raise CheckpointError(f"checkpoint {tensor_path} holds tensors {sorted(tensors)}, its metadata lists "
                              f"{sorted(recorded)}")
    for k, t in tensors.items():
        if tensor_sha256(t) != recorded[k]:
            raise CheckpointError(f"checkpoint {tensor_path}: tensor {k!r} does not match its recorded sha256 "
                                  f"(the file is corrupted)")
    return meta, tensors


# ------------------------------------------------------------------------------------------------ snapshots
def snapshot_path(root: str | Path, edits: int) -> Path:
    return Path(root) / "snapshots" / f"edits-{edits:06d}.safetensors"


def write_snapshot(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """One safetensors file (tensors + JSON metadata under the key "meta", a sha256 per tensor), written to a
    temporary name, fsynced and renamed: a kill leaves the old file or the new one."""
    return _write_file(path, tensors, meta, ".snapshot")


def read_snapshot(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and tensors of a snapshot, checked against the recorded sha256s."""
    return _read_file(path, "snapshot")


def _write_file(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], kind: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    full = {"format": FORMAT + kind, "version": VERSION, **meta,
            "checksums": {k: tensor_sha256(v) for k, v in tensors.items()}}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(full)})
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _read_file(path: str | Path, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["meta"])
        tensors = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{what} {path} cannot be read: {e}") from e
    for k, t in tensors.items():
        if tensor_sha256(t) != meta["checksums"].get(k):
            raise CheckpointError(f"{what} {path}: tensor {k!r} does not match its recorded sha256")
    return meta, tensors


# ------------------------------------------------------------------------------------------------ target journal
class TargetJournal:
    """The targets of one batch, kept chunk by chunk under `<checkpoint>/targets/` while the batch is edited, so that
    a run killed in the middle of the batch optimises only the chunks it had not finished when it resumes.

    `batch`: batches done before this one; `state`: a digest of what the targets depend on besides their requests
    (the run's identity and the requests already edited, see `Editor._journal`). An entry is read back only for
    the same batch, state and requests in the same order, and only if its checksums hold: anything else (another
    run's entry, a torn file) is ignored and the chunk is optimised again. `prune` removes the entries of other
    batches (the run calls it when the batch's checkpoint is written, and before it resumes)."""

    FOLDER = "targets"

    def __init__(self, root: str | Path, batch: int, state: str):
        self.folder = Path(root) / self.FOLDER
        self.batch, self.state = batch, state

    def path(self, hashes: Sequence[str]) -> Path:
        key = hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:24]
        return self.folder / f"b{self.batch:06d}-{key}.safetensors"

    def load(self, requests: Sequence[Any]) -> tuple[dict[str, torch.Tensor], float] | None:
        """The tensors saved for this chunk of `requests` and the seconds they took, or None."""
        hashes = [request_sha256(r) for r in requests]
        path = self.path(hashes)
        if not path.exists():
            return None
        try:
            meta, tensors = _read_file(path, "target journal entry")
        except CheckpointError:
            return None
        if (meta.get("batch"), meta.get("state"), meta.get("requests")) != (self.batch, self.state, hashes):
            return None
        return tensors, float(meta.get("seconds", 0.0))

    def save(self, requests: Sequence[Any], tensors: dict[str, torch.Tensor], seconds: float) -> Path:
        """Keep one finished chunk (written whole: a kill leaves no entry or the complete one)."""
        hashes = [request_sha256(r) for r in requests]
        meta = {"batch": self.batch, "state": self.state, "requests": hashes, "seconds": seconds}
        return _write_file(self.path(hashes), tensors, meta, ".targets")

    @contextlib.contextmanager
    def lock(self, requests: Sequence[Any], wait: bool = False) -> Iterator[bool]:
        """Hold the chunk's lock (an `flock` beside its entry) for the block: True when held, False when another
        process holds it and `wait` is False (it is optimising the chunk: come back later with `wait=True`, which
        blocks until that process saves the chunk or dies). The kernel drops the lock with its process. Without
        `fcntl` (not POSIX) every claim is granted."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield True
            return
        path = self.path([request_sha256(r) for r in requests]).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def prune(self, keep_own: bool = True) -> None:
        """Remove the entries of other batches and leftover temporary files; with `keep_own=False` the whole
        journal (this batch's checkpoint is written: nothing in it is needed any more)."""
        if not self.folder.is_dir():
            return
        if not keep_own:
            shutil.rmtree(self.folder)
            return
        own = f"b{self.batch:06d}-"
        for p in self.folder.iterdir():
            if not (p.name.startswith(own) and p.name.endswith(".safetensors")):
                shutil.rmtree(p) if p.is_dir() else p.unlink()


class FirstBatchTargets:
    """The first batch's targets, shared by the streams that start from the same unedited model with the same
    target settings: AlphaEdit and MEMIT, under either P rule, optimise the same z for the same requests (their
    hyperparameters differ only in `NOT_TARGET_SETTINGS`, which `first_batch_state` leaves out). Two lanes of a
    fresh run split the batch's chunks between them through `claim`, and a later stream of the model reads them.

    Chunks are read from the run's own journal `own`, then from `shared` (`<cache>/.../b000000-*`), and saved to
    both. The shared state holds the threads and the device and dtype the targets are computed with, so that a chunk
    is only ever read by a process that would have computed the same bits."""

    def __init__(self, own: TargetJournal, shared: TargetJournal):
        self.own, self.shared = own, shared

    def load(self, requests: Sequence[Any]) -> tuple[dict[str, torch.Tensor], float] | None:
        return self.own.load(requests) or self.shared.load(requests)

    def save(self, requests: Sequence[Any], tensors: dict[str, torch.Tensor], seconds: float) -> Path:
        self.shared.save(requests, tensors, seconds)
        return self.own.save(requests, tensors, seconds)

    def claim(self, requests: Sequence[Any], wait: bool = False) -> contextlib.AbstractContextManager[bool]:
        """The chunk's lock in the shared folder (`TargetJournal.lock`)."""
        return self.shared.lock(requests, wait=wait)

    def prune(self, keep_own: bool = True) -> None:
        """The run's own journal only: the shared entries serve later streams."""
        self.own.prune(keep_own)


# hyperparameters that do not change the first batch's targets (the P rule, its documentation)
NOT_TARGET_SETTINGS = ("nullspace_threshold", "nullspace_mode", "nullspace_energy", "source")


def first_batch_state(fingerprint: str, hparams: dict[str, Any], templates: list[str], batch_size: int,
                      device: str, dtype: str, threads: int) -> str:
    """What the first batch's targets depend on besides their requests: the unedited model, every hyperparameter
    but `NOT_TARGET_SETTINGS` (MEMIT's and L2 included, to stay on the safe side), the templates, the batch size
    (it fixes the chunks), and where and how they are computed."""
    kept = {k: v for k, v in hparams.items() if k not in NOT_TARGET_SETTINGS}
    return digest(dict(model_fingerprint=fingerprint, hparams=kept, templates=templates, batch_size=batch_size,
                       device=device, dtype=dtype, threads=threads))


"""Checkpoints: a real process killed at every step of a save (and in the middle of a batch) resumes to the same
bits as an uninterrupted run; checkpoints of another run, or corrupted ones, are refused with a message that
names what differs; milestone snapshots give back the exact state."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from stream_job import BATCH, LAYERS, REQUESTS, build_editor

from alphaedit_core import checkpoint as ckpt
from alphaedit_core import mechanism
from alphaedit_core.projection import projector_from_cov
from alphaedit_core.requests import EditRequest


def run_job(cases: list[dict]) -> subprocess.CompletedProcess:
    """Run stream_job.py's zygote on `cases`, single-threaded, importing this tree's alphaedit_core."""
    job = Path(__file__).parent / "stream_job.py"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, str(job), json.dumps(cases)], capture_output=True, text=True,
                          timeout=600, env=env, check=True)


@pytest.fixture(scope="module")
def reference():
    """Weights and cache_c of the uninterrupted stream (single-threaded)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ed = build_editor()
    ed.run(REQUESTS)
    torch.set_num_threads(before)
    return {l: ed.adapter.weight_view(l).clone() for l in LAYERS}, {l: c.clone() for l, c in ed.cache_c.items()}


def assert_same_state(ed, reference):
    weights, cache_c = reference
    for l in LAYERS:
        assert torch.equal(ed.adapter.weight_view(l), weights[l])
        assert torch.equal(ed.cache_c[l], cache_c[l])


def test_kill_at_every_step_of_save_and_mid_batch_resumes_bit_identical(tmp_path, reference, one_thread):
    cases = [{"dir": str(tmp_path / f"save{k}-{step}"), "save": k, "step": step}
             for k in (1, 2) for step in ckpt.SAVE_STEPS]
    cases += [{"dir": str(tmp_path / f"batch{b}"), "batch": b} for b in (1, 2)]
    out = run_job(cases)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["killed"] for r in results] == [True] * len(cases), results
    for case in cases:
        root = Path(case["dir"])
        ed = build_editor()
        ed.run(REQUESTS, checkpoint=root)
        assert ed.batches_done == len(REQUESTS) // BATCH, case
        assert ed.case_ids == [r.case_id for r in REQUESTS], case
        assert_same_state(ed, reference)
        # nothing the kill left behind survives the next start: one version, no temporary files
        assert sorted(p.name for p in root.iterdir()) == ["LATEST", "v-000003"], case


def test_killed_between_the_swaps_the_older_or_newer_version_is_current(tmp_path, one_thread):
    """The first crash window of the old save(): the checkpoint must never be lost."""
    ed = build_editor()
    ed.run(REQUESTS, checkpoint=tmp_path / "ck", stop_after=1)
    meta, _ = ckpt.read_version(tmp_path / "ck")
    assert meta["batches_done"] == 1
    # a version folder that LATEST does not name (killed after the rename, before the pointer swap) is dropped
    # by the next writer; a reader reads the version LATEST names and changes nothing
    (tmp_path / "ck" / "v-000002").mkdir()
    (tmp_path / "ck" / "v-000002.tmp").mkdir()
    assert ckpt.exists(tmp_path / "ck")
    assert ckpt.read_version(tmp_path / "ck")[0]["batches_done"] == 1
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["LATEST", "v-000001", "v-000002",
                                                                  "v-000002.tmp"]
    build_editor().run(REQUESTS, checkpoint=tmp_path / "ck", stop_after=2)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["LATEST", "v-000002"]
    # killed before the first pointer was written: the newest complete version is read, and adopted by a writer
    (tmp_path / "ck" / "LATEST").unlink()
    assert ckpt.read_version(tmp_path / "ck")[0]["batches_done"] == 2
    # the metadata-only reader (mechanism.checkpoint_reports) reads the same version as read_version
    assert ckpt.read_meta(tmp_path / "ck") == ckpt.read_version(tmp_path / "ck")[0]
    assert ckpt.read_meta(tmp_path / "none") is None
    reports = mechanism.checkpoint_reports(tmp_path / "ck")
    assert list(reports.batch) == [0, 1] and list(reports.edits) == [BATCH, 2 * BATCH]
    # a stream's reports: the checkpoint's when this machine has it, else the copy kept beside its tables
    saved = tmp_path / "reports.csv"
    got, fresh = mechanism.stream_reports(tmp_path / "ck", saved)
    assert fresh and list(got.batch) == [0, 1]
    got.to_csv(saved, index=False)
    got, fresh = mechanism.stream_reports(tmp_path / "elsewhere", saved)  # edited on another machine
    assert not fresh and list(got.batch) == [0, 1] and list(got.edits) == [BATCH, 2 * BATCH]
    pd.concat([got, got.iloc[[-1]].assign(batch=2, edits=3 * BATCH)]).to_csv(saved, index=False)  # a longer copy wins
    got, fresh = mechanism.stream_reports(tmp_path / "ck", saved)
    assert not fresh and list(got.batch) == [0, 1, 2]
    got, fresh = mechanism.stream_reports(None, tmp_path / "missing.csv")
    assert not fresh and got.empty and list(got.columns) == list(mechanism.REPORT_COLUMNS)


def test_a_second_writer_is_refused_while_a_reader_may_read(tmp_path):
    """Two runs must never write one checkpoint: the writer lock names its holder; a run with nothing left to do
    (the rendering step of a study, a deadline already passed) only reads, lock or not."""
    root = _stream(tmp_path)
    with ckpt.WriterLock(root):
        with pytest.raises(ckpt.CheckpointBusy, match=r"being written by another run \(pid \d+ on"):
            build_editor().run(REQUESTS, checkpoint=root)
        reader = build_editor()
        reader.run(REQUESTS, checkpoint=root, deadline=0.0)
        assert reader.batches_done == 1
        reader = build_editor()
        reader.run(REQUESTS, checkpoint=root, stop_after=1)
        assert reader.batches_done == 1
    # the lock is given back when its holder ends (also by an exception inside the run)
    ed = build_editor()
    ed.run(REQUESTS, checkpoint=root, stop_after=2)
    assert ed.batches_done == 2 and ckpt.read_version(root)[0]["batches_done"] == 2
    with ckpt.WriterLock(root):
        pass


def test_a_writer_refuses_a_checkpoint_advanced_after_it_read_it(tmp_path, monkeypatch):
    root = _stream(tmp_path)
    real = ckpt.WriterLock.acquire

    def acquire_after_another_run(self):  # another run writes batch 2 between this run's read and its lock
        monkeypatch.setattr(ckpt.WriterLock, "acquire", real)
        build_editor().run(REQUESTS, checkpoint=root, stop_after=2)
        return real(self)

    monkeypatch.setattr(ckpt.WriterLock, "acquire", acquire_after_another_run)
    with pytest.raises(ckpt.CheckpointBusy, match=r"written by another run after this one read it \(v-000001 then, "
                                                  r"v-000002 now\)"):
        build_editor().run(REQUESTS, checkpoint=root)


def _stream(tmp_path, **kw):
    ed = build_editor(**kw)
    ed.run(REQUESTS, checkpoint=tmp_path / "ck", stop_after=1)
    return tmp_path / "ck"


def test_checkpoint_of_another_model_is_refused(tmp_path):
    root = _stream(tmp_path)
    with pytest.raises(ckpt.CheckpointMismatch, match="model_fingerprint"):
        build_editor(seed=1).run(REQUESTS, checkpoint=root)


def test_checkpoint_of_other_hparams_or_method_is_refused(tmp_path):
    root = _stream(tmp_path)
    with pytest.raises(ckpt.CheckpointMismatch, match=r"other hparams \(L2: checkpoint 1.0, this run 2.0\)"):
        build_editor(L2=2.0).run(REQUESTS, checkpoint=root)
    with pytest.raises(ckpt.CheckpointMismatch, match="method='alphaedit'; this run has method='memit'"):
        build_editor(method="memit").run(REQUESTS, checkpoint=root)


def test_checkpoint_with_another_batch_size_is_refused(tmp_path):
    root = _stream(tmp_path)
    with pytest.raises(ckpt.CheckpointMismatch, match="batch_size=2; this run has batch_size=3"):
        build_editor().run(REQUESTS, batch_size=3, checkpoint=root)


def test_checkpoint_of_other_or_reordered_requests_is_refused(tmp_path):
    root = _stream(tmp_path)
    with pytest.raises(ckpt.CheckpointMismatch, match="request 0 of this run"):
        build_editor().run(list(reversed(REQUESTS)), checkpoint=root)
    # requests without case ids (the README example) are told apart by their content
    anonymous = [EditRequest(r.prompt, r.subject, r.target_new, r.target_true) for r in REQUESTS]
    ed = build_editor()
    ed.run(anonymous, checkpoint=tmp_path / "anon", stop_after=1)
    changed = [EditRequest("The capital of {} is", "France", "Berlin", "Paris")] + anonymous[1:]
    with pytest.raises(ckpt.CheckpointMismatch, match="request 0 of this run"):
        build_editor().run(changed, checkpoint=tmp_path / "anon")


def test_corrupted_or_truncated_checkpoint_is_refused_with_its_path(tmp_path):
    root = _stream(tmp_path)
    tensors = root / "v-000001" / "state.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-16:-8] = bytes(8 * [0x47])  # a few bytes of the last tensor's data
    tensors.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="does not match its recorded sha256"):
        build_editor().run(REQUESTS, checkpoint=root)
    tensors.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ckpt.CheckpointError, match=str(tensors)):
        build_editor().run(REQUESTS, checkpoint=root)
    meta = root / "v-000001" / "state.json"
    meta.write_text(meta.read_text()[:100])
    with pytest.raises(ckpt.CheckpointError, match=str(meta)):
        build_editor().run(REQUESTS, checkpoint=root)


def test_snapshot_gives_back_the_exact_state_and_scores(tmp_path):
    ed = build_editor()
    probe = ed.tok(["The capital of France is", "Berlin is located in"], return_tensors="pt", padding=True)
    seen = {}

    def on_batch(editor, batch, report):
        path = ckpt.snapshot_path(tmp_path / "ck", report.edits_done)
        editor.save_snapshot(path, code_version="test")
        with torch.no_grad():
            seen[report.edits_done] = (editor.model(**probe).logits.clone(),
                                       {l: c.clone() for l, c in editor.cache_c.items()})

    ed.run(REQUESTS, checkpoint=tmp_path / "ck", on_batch=on_batch)
    fresh = build_editor()
    for edits, (logits, cache_c) in seen.items():
        meta = fresh.load_snapshot(ckpt.snapshot_path(tmp_path / "ck", edits))
        assert meta["edits"] == edits and meta["code_version"] == "test"
        assert meta["case_ids"] == [r.case_id for r in REQUESTS[:edits]]
        with torch.no_grad():
            assert torch.equal(fresh.model(**probe).logits, logits)
        for l in LAYERS:
            assert torch.equal(fresh.cache_c[l], cache_c[l])
    with pytest.raises(ckpt.CheckpointMismatch, match="model_fingerprint"):
        build_editor(seed=1).load_snapshot(ckpt.snapshot_path(tmp_path / "ck", 2))


def test_run_refuses_a_stream_with_conflicting_or_duplicate_requests():
    conflicting = REQUESTS + [EditRequest("The capital of {} is", "France", "Berlin", "Paris", case_id=9)]
    with pytest.raises(ValueError, match="two different targets"):
        build_editor().run(conflicting)
    with pytest.raises(ValueError, match="duplicate case id"):
        build_editor().run(REQUESTS + [EditRequest("{} likes", "Paris", "tea", case_id=0)])
    with pytest.raises(ValueError, match="batch_size=0"):
        build_editor().run(REQUESTS, batch_size=0)


def _with_threads(n: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_projector_basis_does_not_depend_on_the_thread_count():
    """LAPACK's threaded eigh differs in the last bits between one and two threads at d = 512 (measured: up to 1e-10
    in the float32 basis); the projector pins the decomposition to one thread."""
    d = 512
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * d, d, generator=g, dtype=torch.float64)
    cov = (x.T @ x / x.shape[0]).float()
    ev = torch.linalg.eigvalsh(cov.double())
    threshold = float(ev[d // 4] + ev[d // 4 + 1]) / 2  # between two eigenvalues: the kept count is not in question
    one, two = (_with_threads(n, lambda: projector_from_cov(cov, threshold=threshold)) for n in (1, 2))
    assert one.n_kept == two.n_kept == d // 4 + 1
    assert torch.equal(one.basis, two.basis)
    # the process's thread count is given back
    assert _with_threads(2, lambda: (projector_from_cov(cov, threshold=threshold), torch.get_num_threads())[1]) == 2


def test_checkpoint_of_other_statistics_is_refused_and_says_why(tmp_path):
    from stream_job import hparams
    from tiny import tiny_model, tiny_tokenizer

    from alphaedit_core.editor import Editor

    root = _stream(tmp_path)
    model = tiny_model("llama", seed=0)
    g = torch.Generator().manual_seed(7)  # another covariance than build_editor's
    covs = {}
    for l in LAYERS:
        basis = torch.randn(model.config.intermediate_size, 20, generator=g, dtype=torch.float64)
        covs[l] = (basis @ basis.T / 20).float()
    other = Editor(model, tiny_tokenizer(), hparams(), projectors={l: projector_from_cov(c, threshold=1e-6)
                                                                    for l, c in covs.items()}, progress=False)
    with pytest.raises(ckpt.CheckpointMismatch, match=r"statistics_sha256=.*other second moments or projectors"):
        other.run(REQUESTS, checkpoint=root)

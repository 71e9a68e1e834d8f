"""The first batch's targets, shared between the streams of one unedited model (`checkpoint.FirstBatchTargets`):
a MEMIT stream reads what an AlphaEdit stream optimised and edits with the same bits as on its own; a chunk another
process holds is skipped, then read once saved (or optimised here if that process left without saving it); the
shared state separates what changes the targets from what does not."""
import threading
import time

import pytest
import torch

from stream_job import LAYERS, REQUESTS, build_editor
from test_target_journal import ONE_PER_CHUNK, count_optimised, state_of  # noqa: F401 (a fixture)

from alphaedit_core import checkpoint as ckpt
from alphaedit_core import targets as targets_module
from alphaedit_core.hparams import EditHParams


def test_a_memit_stream_reads_the_first_batch_an_alphaedit_stream_optimised(tmp_path, one_thread, count_optimised):
    stream = REQUESTS[:4]
    alone = build_editor(method="memit", **ONE_PER_CHUNK)
    alone.run(stream, batch_size=2, checkpoint=tmp_path / "alone")
    want = state_of(alone)
    shared = tmp_path / "first-batch"
    build_editor(method="alphaedit", **ONE_PER_CHUNK).run(stream, batch_size=2, checkpoint=tmp_path / "a",
                                                          first_batch_cache=shared)
    count_optimised.clear()
    memit = build_editor(method="memit", **ONE_PER_CHUNK)
    memit.run(stream, batch_size=2, checkpoint=tmp_path / "m", first_batch_cache=shared)
    assert sorted(count_optimised) == [2, 3]  # only the second batch: the first was read from the shared cache
    got = state_of(memit)
    for l in LAYERS:  # (MEMIT keeps no cache_c)
        assert torch.equal(got["weights"][l], want["weights"][l])
    assert memit.reports[0].seconds_targets > 0  # the chunks read back count with what they cost
    # other target settings share nothing
    count_optimised.clear()
    build_editor(method="memit", v_lr=0.3, **ONE_PER_CHUNK).run(stream, batch_size=2, checkpoint=tmp_path / "m2",
                                                                first_batch_cache=shared)
    assert sorted(count_optimised) == [0, 1, 2, 3]


def _targets_in_thread(ed, batch, journal) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def work():
        out["result"] = targets_module.compute_targets(ed.model, ed.tok, ed.adapter, batch, ed.templates, ed.hp,
                                                       journal=journal)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, out


def _wait_for(condition, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _shared_journal(tmp_path) -> ckpt.FirstBatchTargets:
    return ckpt.FirstBatchTargets(ckpt.TargetJournal(tmp_path / "own", 0, "run"),
                                  ckpt.TargetJournal(tmp_path / "shared", 0, "first"))


def test_a_chunk_another_process_holds_is_skipped_then_read_once_saved(tmp_path, count_optimised):
    ed = build_editor(**ONE_PER_CHUNK)
    batch = REQUESTS[:3]
    other = ckpt.TargetJournal(tmp_path / "shared", 0, "first")  # the other process's view of the shared folder
    held = other.lock([batch[1]])
    assert held.__enter__() is True
    thread, out = _targets_in_thread(ed, batch, _shared_journal(tmp_path))
    _wait_for(lambda: sorted(count_optimised) == [0, 2])  # it went on with the chunks nobody holds
    assert thread.is_alive()  # and waits for the held one
    d = ed.adapter.d_model
    theirs = dict(z=torch.full((1, d), 7.0), h0=torch.full((1, d), 3.0), steps=torch.tensor([4]),
                  loss=torch.tensor([0.01]))
    other.save([batch[1]], theirs, seconds=9.0)
    held.__exit__(None, None, None)
    thread.join(timeout=120)
    assert not thread.is_alive()
    result = out["result"]
    assert sorted(count_optimised) == [0, 2]  # never optimised here
    assert torch.equal(result.z[1], theirs["z"][0]) and torch.equal(result.h0[1], theirs["h0"][0])
    assert result.seconds_journal == 9.0
    # what this process optimised is in the shared folder for the next stream
    for i in (0, 2):
        assert other.load([batch[i]]) is not None


def test_a_chunk_left_unsaved_by_the_process_that_held_it_is_optimised_here(tmp_path, count_optimised):
    ed = build_editor(**ONE_PER_CHUNK)
    batch = REQUESTS[:3]
    want = targets_module.compute_targets(ed.model, ed.tok, ed.adapter, batch, ed.templates, ed.hp)
    count_optimised.clear()
    held = ckpt.TargetJournal(tmp_path / "shared", 0, "first").lock([batch[1]])
    assert held.__enter__() is True
    thread, out = _targets_in_thread(ed, batch, _shared_journal(tmp_path))
    _wait_for(lambda: sorted(count_optimised) == [0, 2])
    held.__exit__(None, None, None)  # it dies: the kernel drops its lock, no entry was written
    thread.join(timeout=120)
    assert sorted(count_optimised) == [0, 1, 2]
    assert torch.allclose(out["result"].z, want.z)


def test_a_chunk_lock_is_exclusive_until_released(tmp_path):
    a, b = (ckpt.TargetJournal(tmp_path, 0, "s") for _ in range(2))
    with a.lock(REQUESTS[:2]) as mine:
        assert mine
        with b.lock(REQUESTS[:2]) as theirs:
            assert not theirs
        with b.lock(REQUESTS[2:4]) as other_chunk:
            assert other_chunk
    with b.lock(REQUESTS[:2]) as now:
        assert now


def _state(hp: EditHParams, **where) -> str:
    kw = dict(device="cpu", dtype="torch.float32", threads=1) | where
    return ckpt.first_batch_state("fp", hp.to_dict(), ["{}"], 100, **kw)


def test_the_shared_state_ignores_the_p_rule_and_nothing_else():
    official = EditHParams()
    calibrated = EditHParams(nullspace_mode="energy", nullspace_energy=0.03, source="calibrated")
    assert _state(official) == _state(calibrated) == _state(EditHParams(nullspace_threshold=0.5))
    for changed in (EditHParams(v_lr=0.2), EditHParams(clamp_norm_factor=4.0), EditHParams(layers=[4, 5, 6, 7]),
                    EditHParams(targets_chunk=10), EditHParams(mom2_update_weight=1.0)):
        assert _state(changed) != _state(official)
    assert _state(official, threads=2) != _state(official)
    assert _state(official, dtype="torch.bfloat16") != _state(official)
    assert _state(official, device="cuda:0") != _state(official)
    assert ckpt.first_batch_state("other", official.to_dict(), ["{}"], 100, "cpu", "torch.float32", 1) \
        != _state(official)
    assert ckpt.first_batch_state("fp", official.to_dict(), ["{}"], 50, "cpu", "torch.float32", 1) \
        != _state(official)


@pytest.mark.parametrize("method", ["alphaedit", "memit"])
def test_later_batches_are_not_shared(tmp_path, method):
    ed = build_editor(method=method, **ONE_PER_CHUNK)
    ed.batch_size = 2
    assert isinstance(ed._journal(tmp_path / "ck", tmp_path / "shared"), ckpt.FirstBatchTargets)
    ed.batches_done = 1
    assert isinstance(ed._journal(tmp_path / "ck", tmp_path / "shared"), ckpt.TargetJournal)
    assert isinstance(ed._journal(tmp_path / "ck"), ckpt.TargetJournal)

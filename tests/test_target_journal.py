"""The target journal: a run killed in the middle of a batch's target optimisation resumes after its last finished
chunk, with the same bits as an uninterrupted run; an entry is read back only for the batch, edit state and requests
it was written for; finished batches leave no journal behind."""
import json

import pytest
import torch

from stream_job import LAYERS, REQUESTS, build_editor
from test_checkpoint import run_job

from alphaedit_core import checkpoint as ckpt
from alphaedit_core import targets as targets_module

ONE_PER_CHUNK = {"targets_chunk": 1}  # two chunks per batch of two


@pytest.fixture
def count_optimised(monkeypatch):
    """The requests `compute_targets` optimises (not read back from a journal), by case id."""
    seen: list[int] = []
    original = targets_module._optimise

    def counting(model, tok, adapter, requests, *args, **kwargs):
        seen.extend(r.case_id for r in requests)
        return original(model, tok, adapter, requests, *args, **kwargs)

    monkeypatch.setattr(targets_module, "_optimise", counting)
    return seen


def state_of(ed) -> dict:
    return {"weights": {l: ed.adapter.weight_view(l).clone() for l in LAYERS},
            "cache_c": {l: c.clone() for l, c in ed.cache_c.items()}}


def test_killed_after_a_chunk_the_batch_resumes_from_its_journal_with_the_same_bits(tmp_path, one_thread,
                                                                                   count_optimised):
    uninterrupted = build_editor(**ONE_PER_CHUNK)
    uninterrupted.run(REQUESTS)
    want = state_of(uninterrupted)
    count_optimised.clear()
    # chunks 1-2 are batch 1 (requests 0, 1); the 3rd saved chunk is the first of batch 2
    root = tmp_path / "ck"
    out = run_job([{"dir": str(root), "chunk": 3, "hp": ONE_PER_CHUNK}])
    assert json.loads(out.stdout.strip().splitlines()[-1])[0]["killed"]
    meta = ckpt.read_meta(root)
    assert meta["batches_done"] == 1
    entries = list((root / "targets").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("b000001-")
    # mark the entry's recorded cost (metadata, not checksummed) to see it counted in the resumed batch's report
    entry_meta, entry_tensors = ckpt.read_snapshot(entries[0])
    journal = ckpt.TargetJournal(root, entry_meta["batch"], entry_meta["state"])
    chunk = [r for r in REQUESTS if ckpt.request_sha256(r) in entry_meta["requests"]]
    journal.save(chunk, entry_tensors, seconds=1000.0)

    resumed = build_editor(**ONE_PER_CHUNK)
    resumed.run(REQUESTS, checkpoint=root)
    got = state_of(resumed)
    for l in LAYERS:
        assert torch.equal(got["weights"][l], want["weights"][l])
        assert torch.equal(got["cache_c"][l], want["cache_c"][l])
    # batch 2's first chunk (the shorter of requests 2, 3) came from the journal: one of its two requests is
    # optimised, then both of batch 3
    assert len(count_optimised) == 3 and set(count_optimised[1:]) == {4, 5}
    assert count_optimised[0] in (2, 3)
    assert not (root / "targets").exists()  # every batch checkpointed: no journal left
    # the chunk read back counts with the seconds it took when it was optimised
    assert 1000.0 < resumed.reports[1].seconds_targets < 1100.0


def fake_result(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(z=torch.randn(n, 8, generator=g), h0=torch.randn(n, 8, generator=g),
                steps=torch.arange(n), loss=torch.rand(n, generator=g))


def test_an_entry_is_read_back_only_for_its_batch_state_and_requests(tmp_path):
    chunk = REQUESTS[:2]
    j = ckpt.TargetJournal(tmp_path, batch=3, state="s")
    saved = fake_result(2, 0)
    j.save(chunk, saved, seconds=12.5)
    tensors, seconds = j.load(chunk)
    assert seconds == 12.5 and all(torch.equal(tensors[k], saved[k]) for k in saved)
    assert ckpt.TargetJournal(tmp_path, batch=4, state="s").load(chunk) is None  # another batch
    assert ckpt.TargetJournal(tmp_path, batch=3, state="t").load(chunk) is None  # another edit state
    assert j.load(chunk[::-1]) is None  # the same requests in another order
    assert j.load(REQUESTS[2:4]) is None  # other requests
    # a torn or garbled entry is ignored (the chunk is optimised again), not an error
    path = j.path([ckpt.request_sha256(r) for r in chunk])
    path.write_bytes(path.read_bytes()[:-7])
    assert j.load(chunk) is None


def test_an_entry_written_under_another_state_at_the_same_name_is_ignored(tmp_path):
    chunk = REQUESTS[:2]
    ckpt.TargetJournal(tmp_path, batch=0, state="old").save(chunk, fake_result(2, 1), seconds=1.0)
    # same file name (batch and requests), another state: the name does not carry the state, the metadata does
    assert ckpt.TargetJournal(tmp_path, batch=0, state="new").load(chunk) is None


def test_prune_keeps_only_the_batch_being_edited(tmp_path):
    old, now = ckpt.TargetJournal(tmp_path, 1, "s"), ckpt.TargetJournal(tmp_path, 2, "s")
    old.save(REQUESTS[:2], fake_result(2, 0), 1.0)
    now.save(REQUESTS[2:4], fake_result(2, 1), 1.0)
    (tmp_path / "targets" / "b000002-x.safetensors.tmp").write_bytes(b"torn")
    now.prune()
    assert [p.name[:8] for p in (tmp_path / "targets").iterdir()] == ["b000002-"]
    assert now.load(REQUESTS[2:4]) is not None and old.load(REQUESTS[:2]) is None
    now.prune(keep_own=False)
    assert not (tmp_path / "targets").exists()


def test_compute_targets_reads_back_what_it_saved_and_optimises_only_the_rest(count_optimised):
    ed = build_editor(**ONE_PER_CHUNK)
    batch = REQUESTS[:3]

    class Memory:  # a journal in a dict, with the protocol compute_targets expects
        def __init__(self):
            self.kept: dict[tuple, tuple[dict, float]] = {}

        def load(self, requests):
            return self.kept.get(tuple(r.case_id for r in requests))

        def save(self, requests, tensors, seconds):
            self.kept[tuple(r.case_id for r in requests)] = ({k: v.clone() for k, v in tensors.items()}, seconds)

    def targets(journal):
        return targets_module.compute_targets(ed.model, ed.tok, ed.adapter, batch, ed.templates, ed.hp,
                                              journal=journal)

    memory = Memory()
    first = targets(memory)
    assert sorted(count_optimised) == [0, 1, 2] and len(memory.kept) == 3 and first.seconds_journal == 0.0
    del memory.kept[(1,)]
    count_optimised.clear()
    second = targets(memory)
    assert count_optimised == [1]
    assert torch.equal(second.z, first.z) and torch.equal(second.h0, first.h0)
    assert torch.equal(second.steps, first.steps) and torch.equal(second.loss, first.loss)
    assert second.seconds_journal == pytest.approx(sum(s for k, (_, s) in memory.kept.items() if k != (1,)))


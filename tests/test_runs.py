"""Run keys, run tables and the shared unedited baseline (alphaedit_core/runs.py)."""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from tiny import REQUESTS

from alphaedit_core import runs
from alphaedit_core.checkpoint import request_sha256


def test_run_key_is_the_documented_recipe():
    """Written out by hand: a change of recipe would orphan every checkpoint of a running stream."""
    hp = {"L2": 10.0, "layers": [4, 5]}
    hp_part = hashlib.sha256(b'{"L2": 10.0, "layers": [4, 5]}').hexdigest()[:10]
    data_part = hashlib.sha256("".join(request_sha256(r) for r in REQUESTS).encode()).hexdigest()[:10]
    assert runs.run_key("fp", 2000, 100, 0, hp, REQUESTS) == f"fp-n2000-b100-s0-{hp_part}-{data_part}"
    assert runs.run_key("fp", 2000, 100, 0, hp, REQUESTS[::-1]) != runs.run_key("fp", 2000, 100, 0, hp, REQUESTS)


def test_tables_refuse_rows_of_another_run_and_report_progress(tmp_path):
    path = tmp_path / "metrics.csv"
    mine, other = runs.RunTables("key-a"), runs.RunTables("key-b", "sweep")
    mine.check(path)  # no table yet
    mine.append(path, pd.DataFrame(dict(edits=[0, 100], setting=["x", "y"])))
    mine.append(path, pd.DataFrame(dict(edits=[200], setting=["x"])))
    mine.check(path)
    assert mine.done(path, "edits") == {0, 100, 200}
    assert mine.done(path, "setting", "edits") == {("x", 0), ("y", 100), ("x", 200)}
    assert mine.done(tmp_path / "none.csv", "edits") == set()
    with pytest.raises(ValueError, match=r"rows of another run \(run_key \['key-a'\]\); this run is key-b.*new sweep"):
        other.check(path)
    pd.DataFrame(dict(edits=[0])).to_csv(tmp_path / "old.csv", index=False)  # written before run keys existed
    with pytest.raises(ValueError, match=r"\['\(none\)'\]"):
        mine.check(tmp_path / "old.csv")


def test_baseline_is_computed_once_per_model_and_records(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path))
    calls = []

    def fake(lm, tok, records, progress=True):
        calls.append(len(records))
        return {"argmax": [len(records)]}

    monkeypatch.setattr("alphaedit_core.metrics.compute_baseline", fake)
    records = [{"case_id": i} for i in range(3)]
    first = runs.cached_baseline(None, None, records, "fp", REQUESTS[:3])
    again = runs.cached_baseline(None, None, records, "fp", REQUESTS[:3])
    other_model = runs.cached_baseline(None, None, records, "fp2", REQUESTS[:3])
    assert first == again == other_model == {"argmax": [3]} and calls == [3, 3]
    files = sorted(p.name for p in (tmp_path / "runs" / "unedited").iterdir() if p.suffix != ".lock")
    assert files == sorted(f"baseline-{fp}-{runs.data_digest(REQUESTS[:3])}.json" for fp in ("fp", "fp2"))
    assert json.loads((tmp_path / "runs" / "unedited" / files[0]).read_text()) == {"argmax": [3]}


def test_two_processes_asking_for_one_baseline_compute_it_once(tmp_path, monkeypatch):
    """The second caller waits for the first one's baseline instead of computing it again (two threads here: each
    opens the lock file itself, so their flocks conflict as two processes' do)."""
    import threading
    import time

    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path))
    calls, started = [], threading.Event()

    def slow(lm, tok, records, progress=True):
        calls.append(len(records))
        started.set()
        time.sleep(0.5)
        return {"argmax": [len(records)]}

    monkeypatch.setattr("alphaedit_core.metrics.compute_baseline", slow)
    records = [{"case_id": i} for i in range(3)]
    got = []
    first = threading.Thread(target=lambda: got.append(runs.cached_baseline(None, None, records, "fp", REQUESTS[:3])))
    first.start()
    started.wait(5)
    got.append(runs.cached_baseline(None, None, records, "fp", REQUESTS[:3]))  # while the first still computes
    first.join()
    assert calls == [3] and got == [{"argmax": [3]}] * 2


def test_run_key_parts_read_back_what_run_key_wrote():
    key = runs.run_key("0123abcd", 200, 100, -1, {"L2": 1.0}, REQUESTS[:2])
    parts = runs.run_key_parts(key)
    assert parts == dict(model="0123abcd", n_edits="200", batch_size="100", seed="-1",
                         hparams=runs.digest({"L2": 1.0}), data=runs.data_digest(REQUESTS[:2]))


def test_claim_is_exclusive_until_released(tmp_path):
    """Two claims of one unit: the second is refused (None) while the first holds it, granted after release."""
    first = runs.claim(tmp_path / "setting-a")
    assert first is not None
    assert runs.claim(tmp_path / "setting-a") is None
    other = runs.claim(tmp_path / "setting-b")  # another unit is free
    assert other is not None
    first.release()
    again = runs.claim(tmp_path / "setting-a")
    assert again is not None
    again.release(), other.release()


def _append_rows(path: str, worker: int, n: int) -> None:
    table = runs.RunTables("key")
    for i in range(n):
        table.append(path, pd.DataFrame(dict(worker=[worker] * 3, row=[3 * i, 3 * i + 1, 3 * i + 2],
                                             text=["x" * 6000] * 3)))


def test_parallel_appends_keep_one_header_and_whole_rows(tmp_path):
    """Two processes appending to one table: one header, every row whole (rows of 6 kB: an append of three is
    larger than one 8 kB write, so without the lock the appends interleave; 4 of 4 runs failed that way)."""
    import multiprocessing as mp

    path = tmp_path / "metrics.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_rows, args=(str(path), w, 40)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    lines = path.read_text().splitlines()
    assert sum(line.startswith("worker,") for line in lines) == 1
    table = pd.read_csv(path)
    assert len(table) == 240 and (table.text.str.len() == 6000).all() and set(table.run_key) == {"key"}
    assert sorted(table[table.worker == 0].row) == sorted(table[table.worker == 1].row) == list(range(120))


def test_cached_tables_are_computed_once_and_read_by_later_callers(tmp_path):
    from alphaedit_core.runs import cached_tables

    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame(dict(x=[1.5, 2.25])), pd.DataFrame(dict(y=["a"]))

    first = cached_tables(tmp_path / "u", ("metrics", "other"), compute)
    again = cached_tables(tmp_path / "u", ("metrics", "other"), compute)
    assert len(calls) == 1 and sorted(p.name for p in (tmp_path / "u").glob("*.csv")) == ["metrics.csv", "other.csv"]
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="returned 1 tables"):
        cached_tables(tmp_path / "v", ("a", "b"), lambda: (pd.DataFrame(dict(x=[1])),))


def test_cached_tables_are_not_computed_twice_while_another_process_computes_them(tmp_path):
    import threading

    from alphaedit_core.runs import cached_tables, claim

    folder = tmp_path / "u"
    holder = claim(folder / "computing-metrics")  # another process computing them (flock: per open file)
    assert holder is not None

    def never():
        raise AssertionError("computed a second time")

    assert cached_tables(folder, ("metrics",), never, wait=False) is None  # not ready: do other work first

    def finish():  # the other process writes the table, then lets go of the lock
        pd.DataFrame(dict(x=[7])).to_csv(folder / "metrics.csv", index=False)
        holder.release()

    timer = threading.Timer(0.3, finish)
    timer.start()
    (got,) = cached_tables(folder, ("metrics",), never, wait=True)  # waits for it, then reads its table
    timer.join()
    assert got.x.tolist() == [7]


def test_cached_tables_left_unwritten_by_a_dead_process_are_computed_by_the_next(tmp_path):
    from alphaedit_core.runs import cached_tables, claim

    folder = tmp_path / "u"
    claim(folder / "computing-metrics").release()  # it took the lock and died before writing
    (got,) = cached_tables(folder, ("metrics",), lambda: (pd.DataFrame(dict(x=[3])),), wait=False)
    assert got.x.tolist() == [3] and (folder / "metrics.csv").exists()


class Interrupted(RuntimeError):
    pass


def test_in_parts_resumes_after_the_last_part_kept(tmp_path):
    """Bugs pinned: a resume that recomputes kept parts, skips an unfinished one, or changes column types on the way
    through the files. Four parts, the third raises as a stopped process would: the first two are kept; the next
    call computes only the third and fourth and returns exactly the uninterrupted concatenation (a commit hash that
    reads as a number stays a string)."""
    frames = [pd.DataFrame({"case_id": [2 * i, 2 * i + 1], "value": [0.1 * i, 1 / 3 + i],
                            "code_version": ["12345e1234", "0000000042"]}) for i in range(4)]
    calls: list[int] = []

    def part(i, fail=False):
        def compute():
            calls.append(i)
            if fail:
                raise Interrupted(f"part {i}")
            return frames[i]
        return compute

    with pytest.raises(Interrupted):
        runs.in_parts(tmp_path, "m", [part(0), part(1), part(2, fail=True), part(3)])
    assert calls == [0, 1, 2]
    calls.clear()
    got, = runs.in_parts(tmp_path, "m", [part(i) for i in range(4)])
    assert calls == [2, 3]
    pd.testing.assert_frame_equal(got, pd.concat(frames, ignore_index=True))
    calls.clear()
    again, = runs.in_parts(tmp_path, "m", [part(i) for i in range(4)])
    assert calls == [] and again.equals(got)
    # another name is another computation
    other, = runs.in_parts(tmp_path, "n", [part(0)])
    assert calls == [0] and other.equals(frames[0])
    runs.drop_parts(tmp_path, "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.part-0000.0.pkl"]


def test_in_parts_keeps_several_tables_per_part(tmp_path):
    """A part that returns two tables: each table is the concatenation of its own frames; a part that returns a
    different number of tables than asked is an error naming the computation."""
    two = [lambda i=i: (pd.DataFrame({"a": [i]}), pd.DataFrame({"b": [10 * i, 10 * i + 1]})) for i in range(3)]
    a, b = runs.in_parts(tmp_path, "t", two, n_tables=2)
    assert list(a.a) == [0, 1, 2] and list(b.b) == [0, 1, 10, 11, 20, 21]
    with pytest.raises(ValueError, match="'u'.*1 tables, not 2"):
        runs.in_parts(tmp_path, "u", [lambda: pd.DataFrame({"a": [1]})], n_tables=2)
    empty, = runs.in_parts(tmp_path, "empty", [])
    assert empty.empty

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def tiny_setup(tmp_path, monkeypatch):
    """(tmp_path, folder of a tiny saved model) for the notebook tests, with the cache under tmp_path
    (tests/tiny.py `notebook_setup`; test_operating_points has its own, with a second preset)."""
    from tiny import notebook_setup

    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    folder, _ = notebook_setup(tmp_path)
    return tmp_path, folder


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: the subprocesses the checkpoint tests kill run single-threaded, so the
    same kernels give the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Where the project keeps what it computes once: converted models, statistics, data downloads."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def cache_dir(*parts: str) -> Path:
    """`$ALPHAEDIT_CACHE` (default `~/.cache/alphaedit_core`) joined with `parts`, created on demand."""
    root = Path(os.environ.get("ALPHAEDIT_CACHE", Path.home() / ".cache" / "alphaedit_core"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_whole(path: Path, write: Callable[[Path], object]) -> Path:
    """Write `path` whole: `write` fills a temporary file of this process beside it, which then replaces `path` by
    a rename, so that a reader (or another process writing the same file) never sees half of it."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)
    return path

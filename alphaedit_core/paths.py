"""Where the project keeps what it computes once: converted models, statistics, data downloads."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$ALPHAEDIT_CACHE` (default `~/.cache/alphaedit_core`) joined with `parts`, created on demand."""
    root = Path(os.environ.get("ALPHAEDIT_CACHE", Path.home() / ".cache" / "alphaedit_core"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

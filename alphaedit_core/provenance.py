"""Which code produced a result: the git commit of the working tree (with a flag when it had uncommitted changes)
and the versions of the libraries that decide the numbers."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> str:
    """Short commit hash of the project's checkout, "+dirty" when tracked files differ from it (uncommitted
    changes: the commit alone does not reproduce the result); "unknown" outside a git checkout."""
    commit = _git("rev-parse", "--short=10", "HEAD")
    if commit is None:
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "alphaedit_core", "notebooks")
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, str]:
    """Python, platform and the versions of torch, transformers and numpy."""
    import numpy
    import torch
    import transformers

    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": numpy.__version__,
            "threads": str(torch.get_num_threads())}

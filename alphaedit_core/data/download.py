"""Fetching the canonical dataset files (CounterFact, multi-CounterFact, ZsRE) into the cache, once."""
from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from ..paths import cache_dir

BASE_URL = "https://memit.baulab.info/data/dsets/"
"""Where the ROME/MEMIT authors serve the canonical files (read at call time, so it can be overridden)."""

COUNTERFACT = "counterfact.json"
MULTI_COUNTERFACT = "multi_counterfact.json"
ZSRE = "zsre_mend_eval.json"


class DatasetDownloadError(RuntimeError):
    """A canonical file is neither in the cache nor downloadable (typically: no internet)."""


def fetch(name: str, *, loader: str = "load_counterfact", timeout: float = 60.0) -> Path:
    """`cache_dir("data")/name`, downloaded from `BASE_URL + name` with urllib if it is not there yet."""
    dest = cache_dir("data") / name
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    url = BASE_URL + name
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as f:
            shutil.copyfileobj(response, f)
    except (OSError, ValueError) as err:  # URLError, HTTPError and timeouts are OSErrors
        part.unlink(missing_ok=True)
        raise DatasetDownloadError(
            f"could not download {name} from {url} ({err}). Without internet access, download it elsewhere "
            f"and pass path=... to {loader}(), or place it at {dest}."
        ) from err
    os.replace(part, dest)
    return dest

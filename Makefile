# make study  : install (.venv) and run the whole study on MODEL, then build the book
# make test   : install (.venv) and run the tests
MODEL ?= smollm2-135m-instruct
STUDY_ARGS ?=
PY := .venv/bin/python

.PHONY: study test book install
install: .venv/.installed
.venv/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

study: install
	$(PY) -m alphaedit_core.study --model $(MODEL) $(STUDY_ARGS)

book: install
	.venv/bin/jupyter-book build book -W

test: install
	$(PY) -m pytest -q

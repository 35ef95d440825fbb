# The README's two commands: `make run` (the main job on the embedded default) and `make test`.
# Both first install the locked dependencies into .venv (once; again when the lock changes).
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint lock

run: $(VENV)/.installed
	snakemake --cores $(CORES) results/ambersafe/eval.json

test: $(VENV)/.installed
	python -m pytest -q

lint: $(VENV)/.installed
	snakemake --lint
	snakefmt --check .

$(VENV)/.installed: requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# Re-resolve the pins in pyproject.toml into requirements.lock and the conda env files.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	{ sed -n '1,2p' requirements.lock; .lock-venv/bin/python -m pip freeze --exclude-editable \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	.lock-venv/bin/python envs/render.py
	rm -rf .lock-venv

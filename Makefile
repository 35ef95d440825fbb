# The README's two commands: `make run` (the main job on the embedded default) and `make test`.
# Both first install the locked dependencies into .venv (once; again when the lock changes).
VENV ?= .venv
# FastChat, the oracle of the AmberChat loss-mask tests (its target below).
FASTCHAT_VENV ?= .venv-fastchat
BIN := $(VENV)/bin
CORES ?= 2
export PATH := $(abspath $(BIN)):$(PATH)

# What the SLURM tests start (tests/slurm_cluster.py), from Debian's packages.
SYSTEM_PACKAGES := slurmctld slurmd slurm-client munge iproute2
SYSTEM_PROGRAMS := slurmctld slurmd munged sbatch srun ip

.PHONY: run test test-fast lint lock system-packages archive reproduce bench

# rule all: eval.json, generations, the report and the provenance crate (results/ro-crate-metadata.json).
# A failed job's log, ending in its stage's `error: ...` line, is printed: profiles/default/, the
# workflow profile Snakemake applies to every run, sets show-failed-logs.
run: $(VENV)/.installed
	snakemake --cores $(CORES)

# The whole suite, TEST_WORKERS processes at a time (pytest-xdist; a file's tests stay together, so
# its fixtures are built once; files start in the order tests/conftest.py gives, longest first), with
# the 25 slowest tests listed so that growth shows. docs/testing.md says how the suite is organised.
TEST_WORKERS ?= 2
test: $(VENV)/.dev-installed $(FASTCHAT_VENV)/.installed system-packages
	python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# The inner loop: the tests that start no Snakemake, SLURM or training process (markers in
# tests/conftest.py and pyproject.toml), in about 2 minutes.
test-fast: $(VENV)/.dev-installed
	python -m pytest -q -m "not slow and not slurm and not integration" --durations=10

# Peer benchmark: our DPO stage against TRL's DPOTrainer on the same work (bench/peer_trl_dpo.py
# says what it runs). BENCH_ARGS passes flags, e.g. BENCH_ARGS='--repeats 1 --configs embedded:20'
# or '--sweep --jobs 2'; docs/measurements.md has the figures. TRL (the `bench` extra, not in
# requirements.lock) goes into its own environment,
# $(BENCH_VENV), which sees the run environment's packages through a .pth file: .venv stays
# exactly the lock (tests/test_container_definition.py checks that).
BENCH_VENV ?= .venv-bench

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/peer_trl_dpo.py $(BENCH_ARGS)

$(BENCH_VENV)/.installed: $(VENV)/.installed pyproject.toml
	python3 -m venv $(BENCH_VENV)
	site=$$($(BENCH_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	run=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	echo "import site; site.addsitedir('$$run')" > "$$site/amber-run-environment.pth"
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[bench]'
	touch $@

# FastChat 0.2.34, the oracle tests/test_chat_oracle.py checks our AmberChat loss mask against, in its
# own environment like $(BENCH_VENV): its pins (pydantic<2, ...) clash with ours, and .venv stays
# the lock. --no-deps: its train.py needs only what .venv has (torch, transformers, accelerate).
$(FASTCHAT_VENV)/.installed: $(VENV)/.installed tests/oracle/fastchat-requirements.txt
	python3 -m venv $(FASTCHAT_VENV)
	site=$$($(FASTCHAT_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	run=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	echo "import site; site.addsitedir('$$run')" > "$$site/amber-run-environment.pth"
	$(FASTCHAT_VENV)/bin/python -m pip install -q --no-deps --require-hashes \
	  -r tests/oracle/fastchat-requirements.txt
	touch $@

# Installs the SLURM test cluster's packages when one of its programs is missing (as root, with apt);
# otherwise says what to install.
system-packages:
	@missing=""; for p in $(SYSTEM_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(SYSTEM_PACKAGES) (missing:$$missing)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	else \
	  echo "the SLURM tests need$$missing: apt-get install --no-install-recommends $(SYSTEM_PACKAGES)" >&2; \
	  exit 1; \
	fi

# Style and static checks (CI runs them before the tests); `ruff format .` and `snakefmt .` fix most.
lint: $(VENV)/.dev-installed
	ruff check .
	ruff format --check .
	snakemake --lint
	snakefmt --check .

# pip itself at the container's pinned version (one place: containers/amber-repro.def), not the
# newest the index has today.
PIP_VERSION := $(shell sed -n 's/^ *PIP_VERSION=//p' containers/amber-repro.def)

# The run's lock, every file checked against its sha256 (--require-hashes), then the package itself.
$(VENV)/.installed: requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q 'pip==$(PIP_VERSION)'
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# The development tools (tests, linters, the crate validator) on top: their own lock, hashed too.
$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.lock
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	touch $@

# Archival (amber_repro/provenance/archive.py, amber_repro/provenance/replay.py). `make archive` bundles a finished run
# into results/archive/amber-repro-<commit12>[-...].tar.gz: ALLOW_DIRTY=1 takes uncommitted changes (as
# code.diff), WITH_WHEELS=1 adds the lock's wheels, WITH_IMAGE=1 the Apptainer image, WITH_RESULTS=1
# every output (for TOLERANCE). `make reproduce ARCHIVE=<bundle> DIR=<new folder>` reruns it there
# offline and verifies every result; TOLERANCE=1e-3 compares numbers instead of bytes (per kind:
# TOLERANCE=1e-3,scores=5e-3; docs/reproducibility.md); VENV=<env>
# reuses an environment instead of installing one. Values reach the shell quoted.
quote = '$(subst ','\'',$(1))'
enabled = $(filter 1 yes true,$(1))

archive: $(VENV)/.installed
	python -m amber_repro archive --results results --out-dir results/archive \
	  $(if $(call enabled,$(ALLOW_DIRTY)),--allow-dirty) \
	  $(if $(call enabled,$(WITH_WHEELS)),--with-wheels) \
	  $(if $(call enabled,$(WITH_IMAGE)),--with-image) \
	  $(if $(call enabled,$(WITH_RESULTS)),--with-results)

reproduce: $(VENV)/.installed
	@if [ -z $(call quote,$(ARCHIVE)) ] || [ -z $(call quote,$(DIR)) ]; then \
	  echo "usage: make reproduce ARCHIVE=<bundle> DIR=<new folder> [TOLERANCE=1e-3] [VENV=<env>]" >&2; \
	  exit 2; \
	fi
	python -m amber_repro reproduce --archive $(call quote,$(ARCHIVE)) --dir $(call quote,$(DIR)) \
	  --cores $(call quote,$(CORES)) \
	  $(if $(TOLERANCE),--tolerance $(call quote,$(TOLERANCE))) \
	  $(if $(filter command line environment,$(origin VENV)),--venv $(call quote,$(VENV)))

# Re-resolve the pins in pyproject.toml (the run's and the dev extra's together, so that they agree)
# into requirements.lock and requirements-dev.lock, with hashes (envs/lock.py), and the conda env files.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q 'pip==$(PIP_VERSION)'
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	.lock-venv/bin/python -m pip freeze --all --exclude-editable > .lock-venv/freeze.txt
	cd envs && ../.lock-venv/bin/python lock.py ../.lock-venv/freeze.txt
	.lock-venv/bin/python envs/render.py
	rm -rf .lock-venv

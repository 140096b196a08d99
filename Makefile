# The two set-up-free commands of the README:
#   make demo   creates .venv if missing, installs the pinned set, runs a short QMP training job
#   make test   creates .venv if missing, installs the pinned set, runs ruff, mypy, the docs
#               build and the tests
# make docs builds the documentation site (docs/_build/html) with warnings as errors;
# make docs-shot renders two of its pages to PNG with headless Chromium, to look at them.
# Re-running either is cheap: the install step is skipped while requirements.lock and
# pyproject.toml are unchanged.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test test-all lint docs docs-shot install bench

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# One pip call for torch and everything that depends on it (see requirements.lock).
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# One torch thread: the demo's networks are small, and on a 2-core machine that is busy with
# anything else two threads wait on each other (measured: 5 steps/s instead of ~200).
demo: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) cleanrl_qmp/sac_qmp.py --demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint docs
	$(PY) -m pytest -q

test-all: lint docs
	$(PY) -m pytest -q -m "slow or not slow"

# Sphinx + MyST + furo (the lock's docs extra). -W --keep-going: every warning is listed, then
# fails the build; -n (nitpicky): every cross-reference to our own code must resolve.
DOCS_HTML := docs/_build/html
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -n -q -b html docs $(DOCS_HTML)

# Debian's chromium package (apt-get install chromium); --no-sandbox because CI runs as root.
SHOTS := docs/_build/shots
CHROMIUM ?= chromium
docs-shot: docs
	@command -v $(CHROMIUM) >/dev/null || { echo "docs-shot needs headless Chromium: apt-get install chromium (or CHROMIUM=/path/to/chrome)"; exit 1; }
	mkdir -p $(SHOTS)
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
		--screenshot=$(SHOTS)/index.png file://$(CURDIR)/$(DOCS_HTML)/index.html
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
		--screenshot=$(SHOTS)/multistage_reacher.png \
		file://$(CURDIR)/$(DOCS_HTML)/environments/multistage_reacher.html
	@echo "screenshots in $(SHOTS)/"

bench: $(STAMP)
	$(PY) benchmarks/env_speed.py
	$(PY) benchmarks/metaworld_build.py
	$(PY) benchmarks/qswitch_speed.py
	$(PY) benchmarks/script_speed.py --env-ids qmp/MultistageReacher-v0 qmp/MetaWorldMT10-v0
	$(PY) benchmarks/checkpoint_size.py --env-ids qmp/MultistageReacher-v0 qmp/MetaWorldMT10-v0
	$(PY) benchmarks/sweep_overhead.py
	$(PY) benchmarks/suite_throughput.py
	$(PY) benchmarks/evaluation_speed.py

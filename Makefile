# The two set-up-free commands of the README:
#   make demo   creates .venv if missing, installs the pinned set, runs a short QMP training job
#   make test   creates .venv if missing, installs the pinned set, runs ruff, mypy and the tests
# Re-running either is cheap: the install step is skipped while requirements.lock and
# pyproject.toml are unchanged.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test test-all lint install bench

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

test: lint
	$(PY) -m pytest -q

test-all: lint
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) benchmarks/env_speed.py
	$(PY) benchmarks/metaworld_build.py
	$(PY) benchmarks/qswitch_speed.py
	$(PY) benchmarks/script_speed.py --env-ids qmp/MultistageReacher-v0 qmp/MetaWorldMT10-v0
	$(PY) benchmarks/checkpoint_size.py --env-ids qmp/MultistageReacher-v0 qmp/MetaWorldMT10-v0
	$(PY) benchmarks/sweep_overhead.py
	$(PY) benchmarks/suite_throughput.py
	$(PY) benchmarks/evaluation_speed.py

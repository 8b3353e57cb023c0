# The two commands (README): `make run` runs the main job, `make test` runs the tests.
# The main job trains MAML-TRPO on 2D navigation and evaluates it on held-out tasks (a few minutes).
# Both create the virtual environment .venv with pinned installs on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: run test setup lint bench clean

RUN_DIR ?= runs/main-$(shell date +%Y%m%d-%H%M%S)

run: $(STAMP)
	$(BIN)/metarl train experiments/maml_trpo_navigation2d_quick.yaml --run-dir $(RUN_DIR)

test: $(STAMP)
	$(BIN)/pytest -q

setup: $(STAMP)

# torch first, from the pinned CPU build (a bare `torch` requirement would pull a multi-GB CUDA build),
# then the package with every dependency pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[metaworld,dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check metarl envs agents tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/env_speed.py
	$(BIN)/python benchmarks/sampler_speed.py

clean:
	rm -rf $(VENV) build *.egg-info

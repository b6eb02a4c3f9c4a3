# Fresh clone: `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgekit-installed
# torch/torchvision pinned together (a mismatched pair fails to import); override if needed.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: demo test lint pytest browser test-floors test-gpu device-check bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit demo --model inception_v3 -o build/demo

lint: $(STAMP)
	$(BIN)/ruff check edgekit tests benchmarks examples
	$(BIN)/mypy

pytest: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# headless Chromium for the live view's test (tests/runtime/test_serve.py); CI runs as root on Debian
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

test: lint pytest test-floors

# The device tier on the oldest dependencies pyproject.toml promises (tests/floors.py pins them),
# in a second environment without torch: a floor the code has outgrown fails here.
FLOORS := .venv-floors
FLOOR_TESTS := tests/quant/test_simulate.py tests/test_stats.py tests/test_entropy.py tests/test_calibcache.py \
	tests/test_profiles.py tests/test_preprocess.py tests/test_calibdata.py
$(FLOORS)/.stamp: pyproject.toml tests/floors.py Makefile $(STAMP)
	rm -rf $(FLOORS)
	$(PYTHON) -m venv $(FLOORS)
	$(BIN)/python tests/floors.py > $(FLOORS).txt
	$(FLOORS)/bin/python -m pip install -q -r $(FLOORS).txt pytest scipy
	$(FLOORS)/bin/python -m pip install -q --no-deps -e .
	touch $@

test-floors: $(FLOORS)/.stamp
	$(FLOORS)/bin/python -c "import importlib.util as u; assert u.find_spec('torch') is None"
	$(FLOORS)/bin/python -m pytest -q -p no:cacheprovider $(FLOOR_TESTS)

# Everything that needs an NVIDIA GPU, in one call, with the machine's own Python (a lent GPU
# machine has no network for a venv): figures in device-check.json, and what could not run and why.
device-check:
	PYTHONPATH=. $(PYTHON) benchmarks/device_check.py --out device-check.json --budget 420

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

# the published suite: all six models, writes benchmarks/RESULTS.md, results.json and plots (~15-25 min on 2 cores)
bench: $(STAMP)
	$(BIN)/python benchmarks/suite.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache $(FLOORS) $(FLOORS).txt .venv-keras

# Fresh clone: `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgekit-installed
# torch/torchvision pinned together (a mismatched pair fails to import); override if needed.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# Where torch and torchvision come from; empty: PyPI, whose Linux x86-64 build is the CUDA one (3.05 GB
# to download, 5.3 GB installed with NVIDIA's libraries and triton). Without an NVIDIA GPU:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu    (about 190 MB, 0.75 GB installed: measured on 2.13.0+cpu)
TORCH_INDEX ?=
PYTEST_ARGS ?=
# .venv is a desktop/CI environment (PyPI's torch, pip's OpenCV without GStreamer, TensorRT-RTX): on a
# Jetson (JetPack writes this file) making it stops with a pointer to README.md's Install section, unless
# JETSON_OK=1 (e.g. make demo JETSON_OK=1).
TEGRA_RELEASE ?= /etc/nv_tegra_release
JETSON_OK ?=

.PHONY: demo test lint pytest browser test-floors test-gpu device-check bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -e "$(TEGRA_RELEASE)" ] && [ -z "$(JETSON_OK)" ]; then \
	  echo "make: this is a Jetson ($(TEGRA_RELEASE) exists); nothing was installed." >&2; \
	  echo "  make demo and make test are for desktops and CI: their .venv takes PyPI's $(word 1,$(TORCH)) (on JetPack 5's" >&2; \
	  echo "  Python 3.8 it does not install; on JetPack 6 it runs on the CPU only), pip's OpenCV without GStreamer, TensorRT-RTX." >&2; \
	  echo "  On a Jetson, either build the bundle on a desktop (make demo there) and copy it over (edgekit build BUNDLE on" >&2; \
	  echo "  the board), or install edgekit next to JetPack as README.md's Install section says (A Jetson with JetPack 5.1 / 6)." >&2; \
	  echo "  To make this .venv here anyway: make $(or $(MAKECMDGOALS),venv) JETSON_OK=1" >&2; \
	  exit 1; \
	fi
	@echo "== $(VENV): a virtual environment for edgekit, made with $(PYTHON) (pip is quiet: the lines starting == say what runs)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== upgrading pip in $(VENV) (a few MB)"
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(strip $(TORCH_INDEX)),)
	@echo "== installing $(TORCH) from PyPI: on Linux x86-64 the CUDA build, 3.05 GB to download and 5.3 GB"
	@echo "   installed (torch, NVIDIA's CUDA libraries, triton): a minute on a fast link, 8 at 50 Mbit/s. Without an NVIDIA GPU, stop"
	@echo "   (Ctrl-C) and run: make $(or $(MAKECMDGOALS),venv) TORCH_INDEX=https://download.pytorch.org/whl/cpu (about 190 MB)"
else
	@echo "== installing $(TORCH) from $(TORCH_INDEX)"
endif
	$(BIN)/python -m pip install -q $(TORCH) $(if $(strip $(TORCH_INDEX)),--index-url $(TORCH_INDEX))
	@echo "== installing edgekit (editable) with its dev extra: ONNX Runtime, OpenVINO, TensorRT-RTX, OpenCV,"
	@echo "   timm, the linters and test tools: about 1.4 GB installed, under a minute on a fast link"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)
	@echo "== $(VENV) is ready ($$(du -sh $(VENV) | cut -f1)). Its commands are not on your PATH: run"
	@echo "   . $(VENV)/bin/activate   (then edgekit ..., python ..., pytest ...), or type $(BIN)/edgekit ..."

demo: $(STAMP)
	$(BIN)/edgekit demo --model inception_v3 -o build/demo

lint: $(STAMP)
	$(BIN)/ruff check edgekit tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo --no-cache

pytest: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# headless Chromium for the live view's test (tests/runtime/test_serve.py); CI runs as root on Debian
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

# lint and the floors' environment (tens of seconds each) run beside pytest, which leaves a core mostly idle
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 lint pytest test-floors

# The device tier on the oldest dependencies pyproject.toml promises (tests/floors.py pins them),
# in a second environment without torch: a floor the code has outgrown fails here.
FLOORS := .venv-floors
FLOOR_TESTS := tests/quant/test_simulate.py tests/quant/test_stats.py tests/quant/test_entropy.py tests/quant/test_calibcache.py \
	tests/test_profiles.py tests/test_preprocess.py tests/quant/test_calibdata.py
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

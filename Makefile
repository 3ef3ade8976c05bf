# tritonforge: every target creates and uses a local virtualenv (.venv) unless one is already active.
VENV ?= .venv
ifdef VIRTUAL_ENV
PY := python
STAMP := $(VIRTUAL_ENV)/.tritonforge-installed
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tritonforge-installed
endif
# torch is pinned to a release the suite is known to pass on; override for another build, e.g.
#   make install TORCH_SPEC="torch --index-url <your wheel index>"
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test test-gpu lint check demo bench gpu-wheels clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check kernels engine bench tests

check: $(STAMP)
	$(PY) -m engine.cli check

demo: $(STAMP)
	$(PY) -m engine.cli demo

bench: $(STAMP)
	$(PY) -m engine.cli bench

# Wheels (Python 3.12, x86-64) of the runtime packages a lent GPU machine may lack, into .whl/ (ignored
# by git): carry that folder; bench/gpu_engine.sh installs them into a private folder.
GPU_WHEELS ?= gguf fastapi starlette pydantic pydantic-core annotated-types typing-inspection typing-extensions \
	annotated-doc opentelemetry-api uvicorn httptools uvloop
gpu-wheels: $(STAMP)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--platform manylinux1_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info

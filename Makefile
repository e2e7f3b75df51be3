# Two commands on a fresh Debian/Ubuntu machine with Python 3.11: `make demo`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

# A new venv needs about 7 GB (PyPI's torch comes with its CUDA libraries): say so before
# pip fails half-way with a bare "No space left on device".
NEED_GB := 8

$(STAMP): pyproject.toml setup.py evaluator/_fastmetrics.c
	@test -x $(BIN)/python || { free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  [ "$$free" -ge $(NEED_GB) ] || { echo "error: $(CURDIR) has $$free GB free; a new $(VENV) needs about $(NEED_GB) GB. Free some space (or delete old checkouts) and run make again." >&2; exit 1; }; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,baseline,service]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/iugc demo-site

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .hypothesis

# Two commands do all set-up on a fresh machine:
#   make demo   — segment the bundled demo volume with the bundled demo model
#   make test   — run the test suite (what CI runs)
# Both create ./.venv on first use and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test bench setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,demo]"
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unetsigmoidseg demo --output-dir unetsigmoidseg-demo

test: $(STAMP)
	$(PY) -m ruff check UNetSigmoidSeg Testing Resources
	$(PY) -m ruff format --check --quiet UNetSigmoidSeg Testing Resources
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) Testing/benchmarks/run_all.py --out Testing/benchmarks/results

clean:
	rm -rf $(VENV) unetsigmoidseg-demo

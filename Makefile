# Two commands do all set-up on a fresh machine:
#   make demo   — segment the bundled demo volume with the bundled demo model
#   make test   — run the test suite (what CI runs), then the Slicer-version matrix
# Both create ./.venv on first use and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# Slicer-version matrix: the Slicer adapter's tests against the newest slicer-core build of every release line on
# the package index from 5.11 on (5.11 and 5.12 pin vtk 9.6.0, 5.13 pins vtk 9.6.2), each in its own virtualenv
# .venv-slicer-<version>/ holding only that slicer-core and its vtk (~0.8 GB; the other packages come from $(VENV)
# through a .pth file, see Testing/slicer_matrix_venv.py); then the same tests once more with Slicer 5.8's
# vtkSegment, checking every Slicer method the module calls against Slicer 5.8.0's and 5.10.0's headers.
SLICER_CORE_VERSIONS ?= 5.11.0.6 5.12.4.0 5.13.31053.0
SLICER_MATRIX_TESTS := Testing/mrml Testing/widget/test_panel.py
SLICER_MATRIX_KEY := $(shell cat Testing/slicer_matrix_venv.py | cksum | cut -d' ' -f1)
PYTEST := -m pytest -q -p no:cacheprovider

.PHONY: demo test test-suite test-slicer bench setup clean
.SECONDARY:

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,demo]"
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unetsigmoidseg demo --output-dir unetsigmoidseg-demo

test: test-suite test-slicer

test-suite: $(STAMP)
	$(PY) -m ruff check UNetSigmoidSeg Testing Resources
	$(PY) -m ruff format --check --quiet UNetSigmoidSeg Testing Resources
	$(PY) $(PYTEST) --durations=20

.venv-slicer-%/.installed-$(SLICER_MATRIX_KEY): $(STAMP) Testing/slicer_matrix_venv.py
	$(PY) Testing/slicer_matrix_venv.py $* .venv-slicer-$*
	touch $@

test-slicer: $(foreach v,$(SLICER_CORE_VERSIONS),.venv-slicer-$(v)/.installed-$(SLICER_MATRIX_KEY))
	@failed=""; for v in $(SLICER_CORE_VERSIONS); do \
	  echo "== slicer-core $$v: $(SLICER_MATRIX_TESTS)"; \
	  .venv-slicer-$$v/bin/python $(PYTEST) $(SLICER_MATRIX_TESTS) || failed="$$failed $$v"; \
	done; \
	v=$(firstword $(SLICER_CORE_VERSIONS)); \
	echo "== Slicer 5.8 emulation and API check (Testing/mrml/slicer58.py) on slicer-core $$v: $(SLICER_MATRIX_TESTS)"; \
	PYTHONPATH=Testing/mrml .venv-slicer-$$v/bin/python $(PYTEST) -p slicer58 $(SLICER_MATRIX_TESTS) \
	  || failed="$$failed 5.8-emulation"; \
	if [ -n "$$failed" ]; then echo "Slicer matrix failed on:$$failed"; exit 1; fi

bench: $(STAMP)
	$(PY) Testing/benchmarks/run_all.py --out Testing/benchmarks/results

clean:
	rm -rf $(VENV) .venv-slicer-* unetsigmoidseg-demo

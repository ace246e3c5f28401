# keras-encdec: `make demo` and `make test` each create or refresh .venv/ from
# the pinned requirements, then do their job.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-stamp
BACKENDS := jax torch tensorflow
# Two workers (work-stealing): the suite is dominated by single-threaded XLA/graph
# compilation, so both cores stay busy. Override with PYTEST_ARGS=.
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: venv demo notebooks test $(addprefix test-,$(BACKENDS)) clean

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt 2>&1 | grep -v "is ignored: it is neither" || true
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
	@$(PY) -c "import keras, keras_hub, jax, torch, tensorflow, transformers, keras_encdec" || (echo "venv install failed" && exit 1)
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) -m keras_encdec demo

# The guides' notebooks are generated from their jupytext .py files.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --to ipynb guides/*.py

# One pytest process per backend. Exit code 5 (no tests collected) fails.
test: $(STAMP)
	@set -e; for b in $(BACKENDS); do \
	  echo "=== pytest, KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(PY) -m pytest -q $(PYTEST_ARGS) keras_encdec tests; \
	done

# A static pattern rule: make skips implicit rules for .PHONY targets.
$(addprefix test-,$(BACKENDS)): test-%: $(STAMP)
	KERAS_BACKEND=$* $(PY) -m pytest -q $(PYTEST_ARGS) keras_encdec tests

clean:
	rm -rf $(VENV)

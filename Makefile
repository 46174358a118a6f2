# make run   - create .venv, install, run the default experiment end to end
# make test  - same install, then the whole test suite (tests marked slow excluded: make test-all)
# make clean - the venv and build leftovers only; clean-cache: the stage cache; clean-outputs: all results
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-all clean clean-cache clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/python -m runner $(ARGS)

test: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# clean removes what the install and the tests made, never a result or a model
clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
	find runner tests bench scripts hydra_plugins -name __pycache__ -type d -prune -exec rm -rf {} +

# the stage cache only (outputs/cache): results, models and run dirs stay
clean-cache: install
	$(BIN)/python -m runner.cache clear --yes

# everything under outputs/: every run's results and models, the cache, W&B's offline runs
clean-outputs:
	rm -rf outputs

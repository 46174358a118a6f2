# make run   - create .venv, install, run the default experiment end to end
# make test  - same install, then the test suite but the tests marked slow (tests marked gpu skip without CUDA)
# make test-all - the whole suite, slow tests too; make test-slow - only those (CI runs test, then test-slow)
# make lint  - ruff (lint, format check) and the import contracts (lint-imports)
# make lock  - rewrite requirements.lock (the exact versions make install uses) from pyproject.toml
# make clean - the venv and build leftovers only; clean-cache: the stage cache; clean-outputs: all results
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock run test test-slow test-all lint clean clean-cache clean-outputs

install: $(STAMP)

# the exact versions of requirements.lock, then ragtune itself (editable) on top of them. editable_mode=compat
# puts the checkout on sys.path (a .pth file): setuptools' default finder comes after Python's own, so a script
# beside a clone folder named ragtune/ imported that folder (a namespace package) instead of the package
$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	touch $(STAMP)

# rewrite requirements.lock from pyproject.toml's ranges; pins that still fit are kept (pip-compile --upgrade
# moves them). torch is written without the local +cpu tag, so the lock installs on a GPU machine too.
lock: install
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --all-extras --strip-extras --no-emit-find-links --no-emit-index-url \
		--no-emit-trusted-host --output-file requirements.lock pyproject.toml
	sed -i 's/^torch==\([0-9.]*\)+[a-z0-9]*/torch==\1/' requirements.lock

run: install
	$(BIN)/python -m runner $(ARGS)

test: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check runner ragtune tests bench scripts hydra_plugins
	$(BIN)/ruff format --check runner ragtune tests bench scripts hydra_plugins
	$(BIN)/lint-imports

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

# make run: create .venv, install, train configs/default.py on MNIST.
# make test: install test tools into the same .venv and run the suite.
# make notebook: execute notebooks/two_layer_net.ipynb in full, outputs saved.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: install install-dev run test lint format clean gallery notebook

install: $(VENV)/.installed

# The package itself, editable (`import mlp` from anywhere, the `mlp` command).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

install-dev: $(VENV)/.installed-dev

# requirements-dev.txt includes requirements.txt: one pip run installs both.
$(VENV)/.installed-dev: requirements-dev.txt requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps -e .
	touch $(VENV)/.installed $@

run: install
	$(PY) main.py --config=configs/default.py --workdir=runs/default

test: install-dev
	$(PY) -m pytest -q -n auto --dist loadgroup tests

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

gallery: install-dev
	$(PY) main.py --config=configs/default.py --workdir=runs/default
	$(PY) main.py --mode=sweep --config=configs/sweep.py --workdir=runs/sweep
	$(PY) bench/gallery.py runs/default runs/sweep docs/gallery
	$(PY) bench/browser.py hparams runs/sweep docs/gallery/tensorboard_hparams.png  # needs chromium
	$(PY) bench/browser.py serve runs/default docs/gallery/serve_page.png  # needs chromium

# Runs notebooks/two_layer_net.ipynb in full (a few minutes) and writes its outputs
# and the hash of its code into it; tests/test_notebook.py checks the hash.
notebook: install-dev
	$(PY) notebooks/execute.py

clean:
	rm -rf $(VENV) runs .pytest_cache

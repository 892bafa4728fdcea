#!/bin/sh
# The install steps of the container image (Dockerfile) and of a bare-metal install (systemd):
# a virtual environment with facesearch and the extras a server needs, then a check that the
# built-in model pack is present and matches its pinned SHA-256 (no network needed at run time).
# scripts/check-install.sh runs this same file in a clean virtual environment.
#
#   sh deploy/install.sh VENV [SOURCE]      EXTRAS=milvus,postgres (default) or e.g. EXTRAS=gpu,postgres
set -eu
VENV=${1:?usage: install.sh VENV [SOURCE]}
SOURCE=${2:-.}
EXTRAS=${EXTRAS:-milvus,postgres}
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
"$VENV/bin/python" -m pip install --quiet --no-cache-dir "$SOURCE[$EXTRAS]"
case ",$EXTRAS," in
  *,gpu,*) "$VENV/bin/python" -m pip uninstall --quiet --yes onnxruntime  # onnxruntime-gpu provides the module
           "$VENV/bin/python" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "onnxruntime-gpu>=1.18" ;;
esac
"$VENV/bin/python" -c "from facesearch.models import load_pack; p = load_pack(); print('model pack', p.name, 'verified')"

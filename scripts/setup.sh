#!/usr/bin/env bash
# Create .venv (if needed) and install napari-tagan into it with the given extras.
# torch is installed first and pinned: torch==2.13.0 is the CPU build these machines carry;
# the project's own range (torch>=2.2,<3) is satisfied by it, so nothing pulls a CUDA build.
# Usage: scripts/setup.sh [extras]     e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
if ! python -c "import torch" 2>/dev/null; then
    pip install -q "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "is ignored" || true
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
pip install -q -e "$spec" 2>&1 | grep -v "is ignored" || true
python -c "import torch, napari_tagan; print(f'napari-tagan {napari_tagan.__version__} with torch {torch.__version__} in .venv')"

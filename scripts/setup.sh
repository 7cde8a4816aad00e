#!/usr/bin/env bash
# Create .venv (if needed) and install napari-tagan into it with the given extras.
# torch is installed first and pinned: torch==2.13.0 is the CPU build these machines carry;
# the project's own range (torch>=2.2,<3) is satisfied by it, so nothing pulls a CUDA build.
# Each step prints one line (what, then how long it took); pip's own output only on errors.
# Usage: scripts/setup.sh [extras]     e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
torch_version="${TORCH_VERSION:-2.13.0}"

step() { printf 'setup: %s ... ' "$*"; started=$SECONDS; }
done_() { echo "${1:-done} ($((SECONDS - started)) s)"; }
pip_install() {
    # pipefail keeps pip's exit status; grep drops a notice this environment prints.
    pip install -q "$@" 2>&1 | { grep -v "is ignored" || true; }
}

if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $("$python" --version 2>&1)"
    "$python" -m venv .venv
    done_
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
step "upgrading pip"
pip_install --upgrade pip
done_ "pip $(pip --version | cut -d' ' -f2)"
if python -c "import torch" 2>/dev/null; then
    echo "setup: torch $(python -c 'import torch; print(torch.__version__)') already in .venv"
else
    step "installing torch==${torch_version} (CPU build, several hundred MB)"
    pip_install "torch==${torch_version}"
    done_
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
step "installing napari-tagan (editable) ${extras:+with extras [$extras] }and its dependencies"
pip_install -e "$spec"
done_
python -c "import torch, napari_tagan; print(f'setup: napari-tagan {napari_tagan.__version__} with torch {torch.__version__} in .venv')"

#!/usr/bin/env bash
# Everything the tests need on a fresh machine, then the whole suite:
# Debian packages for Xvfb, .venv with torch (CPU) and napari-tagan[test], ruff, pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k checkpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-packages.sh
bash scripts/setup.sh test
. .venv/bin/activate
ruff check src tests benchmarks scripts docs
ruff format --check src tests benchmarks scripts docs
python -m pytest "$@"

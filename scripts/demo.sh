#!/usr/bin/env bash
# Install napari-tagan into .venv and run the demo on simulated data (CPU, a few minutes):
# results (TIFFs), a picture (PNG) and metrics (JSON) land in demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
. .venv/bin/activate
napari-tagan demo --output "${1:-demo-output}"

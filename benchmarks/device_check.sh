#!/usr/bin/env bash
# The one command a session with a lent GPU runs (through the device tool, from the repository
# root, with `.whl` carried: see benchmarks/device_wheels.sh), within one 600 s call:
#     run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=600)
# It installs the carried wheels beside the image's torch, then runs benchmarks/gpu_check.py
# (its sections in order, none started after --budget-s) and leaves summary.json and log.txt
# in $OUT, which come back even when the call is cut short.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/srat-device-check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.txt" 2>&1
python3 benchmarks/gpu_check.py --out "$out" --budget-s "${BUDGET_S:-480}" "$@"

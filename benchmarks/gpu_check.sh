#!/usr/bin/env bash
# One GPU check of the medisee-7b preset at full size with random weights (no download):
# load, one question per mode, 32-slice batched throughput and peak memory for bfloat16,
# float32, 8-bit and 4-bit, printed as one table (docs/PERFORMANCE.md records it per card).
# Capped at 8 minutes. --dry-run runs the same steps with the tiny preset on the CPU.
# Other arguments go to benchmarks/gpu_check.py (--precisions, --slices, --size, --json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's medisee
exec timeout 480 "$python" "$root/benchmarks/gpu_check.py" "$@"

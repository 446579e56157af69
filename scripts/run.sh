#!/usr/bin/env bash
# The main job. For now: set up .venv, then answer a sample question about a sample CT
# slice with the bundled default model and write the result to out/sample/.
# (The MONAI Label server will replace this once it exists.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
sample="$("$root/.venv/bin/python" -c 'from pydicom.data import get_testdata_file; print(get_testdata_file("CT_small.dcm"))')"
out="${MEDISEE_OUT:-$root/out/sample}"
"$root/.venv/bin/medisee" predict --model default --image "$sample" \
  --query "which organ filters the blood?" --out "$out" "$@"
echo "result: $out/result.json, masks and overlay.png in $out"

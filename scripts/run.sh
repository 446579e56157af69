#!/usr/bin/env bash
# The main job: set up .venv (and Orthanc), then start the MONAI Label server hosting MediSee
# with the bundled default model and a sample study, on http://127.0.0.1:8000 (Ctrl+C stops).
# Extra arguments go to the launcher: --port, --host, --studies DIR|DICOMWEB_URL, --conf KEY VALUE.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/python" -m monailabel_app.serve "$@"

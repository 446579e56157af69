#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv (idempotent).
# torch is installed first and alone so pip takes the local CPU wheel and never
# resolves a CUDA build; everything else comes pinned from requirements.lock.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.medisee-setup-stamp"
want="$(cat "$root/requirements.lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/medisee" ]; then
  exit 0
fi
echo "[setup] preparing $venv (first run takes a few minutes)" >&2
python3 -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
$pip install "torch==2.13.0"
$pip install -r "$root/requirements.lock"
$pip install --no-deps -e "$root"
if "$venv/bin/python" -c "import torchvision" 2>/dev/null; then
  echo "[setup] torchvision is installed in .venv; it breaks transformers' SAM on CPU torch. Removing it." >&2
  $pip uninstall -y torchvision
fi
echo "$want" > "$stamp"
echo "[setup] ready: $venv/bin/medisee" >&2

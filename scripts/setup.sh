#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv (idempotent).
# torch is installed first and alone so pip takes the local CPU wheel and never
# resolves a CUDA build; everything else comes from requirements.lock, a complete freeze
# installed with --no-deps (monailabel declares torchvision, sam2 and a CUDA torch);
# requirements-mrml.lock adds Slicer's non-Qt libraries for the tests (real MRML scenes).
# Orthanc (the DICOMweb server) and cmake come from Debian when apt-get is usable.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.medisee-setup-stamp"
want="$(cat "$root/requirements.lock" "$root/requirements-mrml.lock" "$root/pyproject.toml" "$root/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"

install_debian_packages() {
  command -v Orthanc >/dev/null && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] && command -v cmake >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "[setup] installing from Debian: orthanc, orthanc-dicomweb (DICOMweb tests), cmake (Slicer extension check)" >&2
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      orthanc orthanc-dicomweb cmake >/dev/null; }; then
    echo "[setup] could not install Debian packages (needs root or passwordless sudo); DICOMweb tests need Orthanc (or MEDISEE_SKIP_ORTHANC=1)" >&2
  fi
  # the Debian package starts a system Orthanc on port 8042; ours run with their own configuration
  $sudo service orthanc stop >/dev/null 2>&1 || true
}
install_debian_packages

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/medisee" ]; then
  exit 0
fi
echo "[setup] preparing $venv (first run takes a few minutes)" >&2
python3 -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
$pip install "torch==2.13.0"
$pip install --no-deps -r "$root/requirements.lock"
$pip install --no-deps -r "$root/requirements-mrml.lock"  # tests only: real MRML (see its header)
$pip install --no-deps -e "$root"
if "$venv/bin/python" -c "import torchvision" 2>/dev/null; then
  echo "[setup] torchvision is installed in .venv; it breaks transformers' SAM on CPU torch. Removing it." >&2
  $pip uninstall -y torchvision
fi
echo "$want" > "$stamp"
echo "[setup] ready: $venv/bin/medisee" >&2

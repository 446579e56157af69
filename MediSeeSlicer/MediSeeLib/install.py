"""Installing the MediSee server into 3D Slicer's Python, without replacing what Slicer ships.

The plan is pure: the project's pinned requirements (``requirements.lock``, installed with
``--no-deps`` as the project does, because monailabel declares packages that must not be installed)
minus every distribution already present in Slicer's Python, at whatever version.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import MediSeeError

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass
class InstallPlan:
    install: list[str]  # requirement lines to pip-install
    kept: list[str]  # names Slicer already has (left alone)
    source: str  # the medisee project (a folder, wheel or requirement)

    def pip_command(self, python: str) -> list[str]:
        return [python, "-m", "pip", "install", "--no-deps", *self.install, self.source]

    def summary(self) -> str:
        return (f"Install {len(self.install)} package(s) and MediSee ({self.source}) into Slicer's Python; "
                f"{len(self.kept)} package(s) Slicer already has are kept as they are.")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The distribution a requirement line names; None for comments, blanks and pip options."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    match = _NAME.match(line)
    return canonical(match.group(1)) if match else None


def read_requirements(path: str | Path) -> list[str]:
    lines = Path(path).read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if requirement_name(line)]


def installed_distributions() -> set[str]:
    """Canonical names of the distributions in this interpreter (Slicer's Python when run there)."""
    return {canonical(d.metadata["Name"]) for d in metadata.distributions() if d.metadata["Name"]}


def plan_install(requirements: Iterable[str], installed: Iterable[str], source: str) -> InstallPlan:
    """Requirements whose distribution is not installed at any version; the rest are kept."""
    have = {canonical(n) for n in installed}
    install, kept = [], []
    for line in requirements:
        name = requirement_name(line)
        if name is None or name == "medisee":
            continue
        if name in have:
            kept.append(name)
        else:
            install.append(line)
    return InstallPlan(install, kept, source)


def has_gpu() -> bool:
    """An NVIDIA GPU the server can use (checked without torch, which Slicer may not have yet)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        found = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0 and "GPU" in found.stdout


def device_choice(gpu: bool) -> tuple[str, str]:
    """The server's ``device`` option and what the module tells the user about it."""
    if gpu:
        return "auto", ("A GPU was found: the local server runs the model on it when Slicer's PyTorch has CUDA "
                        "(the server log says which device it loaded the model on); otherwise on the CPU.")
    return "cpu", "No GPU was found: the local server runs the bundled CPU model (a question takes longer)."


def project_install_plan(project_dir: Path, source: str) -> InstallPlan:
    """The plan for a source checkout at ``project_dir`` (its ``requirements.lock``), installing MediSee from ``source``."""
    lock = Path(project_dir) / "requirements.lock"
    if not lock.exists():
        raise MediSeeError(f"MediSee's requirements were not found next to the module ({lock}): install MediSee from its "
                           "source checkout, or start a server with ./scripts/run.sh and connect to it.")
    return plan_install(read_requirements(lock), installed_distributions(), source)


def slicer_python() -> str:
    """Slicer's Python launcher (a plain ``python`` would not find Slicer's packages)."""
    return shutil.which("PythonSlicer") or sys.executable


def server_installed() -> bool:
    """Whether this Python can run the MediSee server."""
    return all(importlib.util.find_spec(name) is not None for name in ("monailabel_app", "medisee", "monailabel"))


def run_pip(plan: InstallPlan, python: str, on_line: Callable[[str], None], tick: Callable[[], None] = lambda: None) -> None:
    """pip in ``python``, each output line to ``on_line`` and ``tick()`` after it (the panel repaints);
    never reinstalls what Slicer ships (``--no-deps``)."""
    process = subprocess.Popen(plan.pip_command(python), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        on_line(line.rstrip())
        tick()
    if process.wait() != 0:
        raise MediSeeError(f"Installing MediSee failed (pip exit code {process.returncode}); see the server log box.")

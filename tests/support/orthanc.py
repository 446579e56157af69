"""A throw-away Orthanc (PACS) with DICOMweb, for tests and for running the server against a PACS.

    with orthanc_server(tmp_path / "orthanc") as pacs:
        pacs.store(Path("study/dicom/ct-phantom").glob("*.dcm"))
        client = DICOMwebClient(pacs.dicomweb_url)

Orthanc runs with its own configuration, storage and log under ``work``; its HTTP port is a
free one and it refuses non-loopback clients (``RemoteAccessAllowed: false``; Orthanc 1.10
has no bind address option). Its DICOM (DIMSE) listener is off: it would listen on every
interface, and DICOMweb needs none of it. The server is stopped on exit whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.server import free_port
from tests.support.server import stop as stop_process_group

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SKIP_VARIABLE = "MEDISEE_SKIP_ORTHANC"
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and Orthanc binding it


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed."""


@dataclass
class Orthanc:
    """A running Orthanc: ``url`` is its REST API, ``dicomweb_url`` what MONAI Label takes as ``--studies``."""

    url: str
    process: subprocess.Popen
    log: Path

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def store(self, files: Iterable[str | Path]) -> list[str]:
        """Store DICOM files (``POST /instances``); returns the Orthanc ids of their series, once each."""
        series: list[str] = []
        for path in files:
            response = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30,
                                     headers={"Content-Type": "application/dicom"})
            if response.status_code != 200:
                raise RuntimeError(f"Orthanc refused {path}: HTTP {response.status_code} {response.text[:500]}")
            parent = response.json()["ParentSeries"]
            if parent not in series:
                series.append(parent)
        if not series:
            raise ValueError("no DICOM files to store")
        return series


def installed() -> tuple[str, Path]:
    """The Orthanc executable and DICOMweb plugin, or :class:`OrthancUnavailable` saying how to install them."""
    executable = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if executable is None or not DICOMWEB_PLUGIN.exists():
        missing = "Orthanc" if executable is None else f"the DICOMweb plugin ({DICOMWEB_PLUGIN})"
        raise OrthancUnavailable(f"{missing} is not installed: run scripts/setup.sh (apt packages orthanc "
                                 f"orthanc-dicomweb), or set {SKIP_VARIABLE}=1 to skip the DICOMweb tests")
    return executable, DICOMWEB_PLUGIN


def require_orthanc() -> None:
    """In a test: fail unless Orthanc and its DICOMweb plugin are installed (skip instead when
    ``MEDISEE_SKIP_ORTHANC=1``), so a machine without them cannot pass the DICOMweb tests silently."""
    try:
        installed()
    except OrthancUnavailable as err:
        if os.environ.get(SKIP_VARIABLE) == "1":
            pytest.skip(f"{SKIP_VARIABLE}=1: {err}")
        pytest.fail(str(err), pytrace=False)


def with_interpreter_bin(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with this interpreter's bin folder first on PATH, so MONAI Label
    finds dcmqi's ``itkimage2segimage`` there instead of downloading it."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def configuration(work: Path, http_port: int, plugin: Path) -> dict:
    """A minimal Orthanc configuration: storage in ``work``, HTTP on ``http_port`` for loopback clients only."""
    return {
        "Name": "MediSeeTest",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "storage"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


@contextmanager
def orthanc_server(work: str | Path, timeout: float = 30) -> Iterator[Orthanc]:
    """Start Orthanc with storage, configuration and log in ``work``; wait until its REST API and the DICOMweb
    plugin answer; stop it on exit (SIGTERM, then SIGKILL)."""
    executable, plugin = installed()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = free_port()
        config = work / f"orthanc-{port}.json"
        config.write_text(json.dumps(configuration(work, port, plugin), indent=2))
        log = work / f"orthanc-{port}.log"
        with open(log, "w") as handle:
            process = subprocess.Popen([executable, str(config)], cwd=work, stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        server = Orthanc(f"http://127.0.0.1:{port}", process, log)
        try:
            if _wait_until_ready(server, timeout, last_attempt=attempt == _START_ATTEMPTS):
                yield server
                return
        finally:
            stop(process)


def _wait_until_ready(server: Orthanc, timeout: float, last_attempt: bool) -> bool:
    """True once Orthanc answers; False if it exited early (worth another port) unless this was the last try."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            if not last_attempt:
                return False
            raise RuntimeError(f"Orthanc exited with status {server.process.returncode}; see its log {server.log}:\n"
                               f"{server.log_text()[-3000:]}")
        try:
            plugins = requests.get(f"{server.url}/plugins", timeout=2)
            if plugins.status_code == 200:
                if "dicom-web" not in plugins.json():
                    raise RuntimeError(f"Orthanc started without its DICOMweb plugin; see its log {server.log}")
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"Orthanc did not answer within {timeout:.0f} s; see its log {server.log}:\n"
                       f"{server.log_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop Orthanc and anything it started: SIGTERM (it shuts down cleanly), SIGKILL after 20 s."""
    stop_process_group(process, signal.SIGTERM)

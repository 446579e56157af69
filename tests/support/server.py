"""A real MONAI Label server with the MediSee app, started as ``scripts/run.sh`` starts it
(``monailabel_app.serve``: MONAI Label behind the MediSee gateway), on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from monailabel_app.serve import APP_DIR



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def monailabel_server(studies: str | Path, work: Path, conf: dict[str, str] | None = None,
                      env: dict[str, str] | None = None, timeout: float = 120, gateway: bool = True) -> Iterator[Server]:
    """Start the server, wait until ``/info/`` answers, stop it (SIGINT, then SIGKILL) on exit.
    ``conf`` defaults keep retrained models under ``work``. ``gateway=False`` starts MONAI
    Label's launcher alone, without the MediSee gateway and endpoints (a benchmark baseline)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    options = {"models_dir": str(work / "models")} | (conf or {})
    command = [sys.executable, "-m", "monailabel_app.serve", "--studies", str(studies), "--host", "127.0.0.1",
               "--port", str(port)]
    if not gateway:
        command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies",
                   str(studies), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in options.items():
        command += ["--conf", key, value]
    log = work / f"server-{port}.log"
    environment = os.environ | {"MONAI_LABEL_SESSION_PATH": str(work / "sessions")} | (env or {})
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=work, stdout=handle, stderr=subprocess.STDOUT, env=environment,
                                   start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_ready(server, timeout)
        yield server
    finally:
        stop(process)


def wait_until_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if requests.get(f"{server.url}/info/", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server did not answer /info/ within {timeout:.0f} s:\n{server.log_text()[-4000:]}")


def stop(process: subprocess.Popen, sig: signal.Signals = signal.SIGINT) -> None:
    """Stop ``process`` and its process group: ``sig`` (a clean shutdown), SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


# threshold 0 keeps every grounded entity, so the plumbing (label values, names, boxes) is
# exercised whatever the bundled model's confidence on the test phantoms
PLUMBING_CONF = {"threshold": "0.0", "mode": "fast"}


@contextmanager
def server_on_copy(template: Path, work: Path) -> Iterator[Server]:
    """A server with ``PLUMBING_CONF`` over a copy of ``template/studies`` (tests write labels into it)."""
    shutil.copytree(template / "studies", work / "studies")
    # the template's DICOM series are read by server-side path
    with monailabel_server(work / "studies", work, conf=PLUMBING_CONF | {"image_folders": str(template)}) as running:
        yield running


def wait_for_training(client, timeout: float = 600) -> dict:
    """Poll a MONAI Label client's ``train_status`` until the retraining it started ends; its last status."""
    deadline = time.monotonic() + timeout
    while (status := client.train_status())["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"retraining did not finish in {timeout / 60:.0f} minutes"
        time.sleep(2)
    return status

"""The server killed mid-training and mid-upload: no temporary files left, the served model
unchanged, and the next retraining runs; SIGTERM to the launcher stops all it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests
from monailabel.client import MONAILabelClient

from tests.monailabel_app.test_labels_and_training import submit
from tests.support.server import free_port, monailabel_server
from tests.support.studies import corrected_label

NAMES = {1: "liver", 2: "right kidney"}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def start_slow_upload(url: str, size: int) -> socket.socket:
    """Open an upload of ``size`` bytes and send a third of it (the rest never comes)."""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port))
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.nii.gz"\r\n\r\n'
    sock.sendall(b"PUT /datastore/image?image=interrupted HTTP/1.1\r\nHost: " + address.netloc.encode() +
                 b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: " +
                 str(len(head) + size + 8).encode() + b"\r\n\r\n" + head + os.urandom(size // 3))
    return sock


@pytest.mark.slow
def test_a_server_killed_mid_training_and_mid_upload_loses_nothing(studies_template, tmp_path):
    shutil.copytree(studies_template / "studies", tmp_path / "studies")
    work, system_temp = tmp_path / "work", tmp_path / "system-temp"
    system_temp.mkdir()
    env = {"TMPDIR": str(system_temp)}
    conf = {"retrain_steps": "400", "mode": "fast"}
    with monailabel_server(tmp_path / "studies", work, conf=conf, env=env) as server:
        client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
        submit(client, "ct-a", corrected_label(11, tmp_path, NAMES), "Which organ makes bile?")
        submit(client, "ct-b", corrected_label(12, tmp_path, NAMES), "Which organ filters the blood?")
        assert requests.post(f"{server.url}/train/medisee", json={}, timeout=30).status_code == 200

        def retraining() -> list[psutil.Process]:
            return [p for p in psutil.Process(server.process.pid).children(recursive=True)
                    if time.time() - p.create_time() > 5]  # its process is up and working

        wait_for(retraining, 120, "the retraining process")
        trainers = retraining()
        upload = start_slow_upload(server.url, 4 << 20)
        time.sleep(2.0)  # a third of the body is in: the server holds it in a spooled temporary file
        os.kill(server.process.pid, signal.SIGKILL)  # the server alone: its training process is not signalled
        server.process.wait(10)
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in trainers), 30,
                 "the orphaned retraining to stop")
        upload.close()
    assert not (work / "models" / "served.json").exists(), "the served model is unchanged"

    with monailabel_server(tmp_path / "studies", work, conf=conf | {"retrain_steps": "1"}, env=env) as server:
        assert list((work / "models" / "scratch").iterdir()) == [], "the interrupted upload was swept"
        assert list(system_temp.iterdir()) == []
        info = requests.get(f"{server.url}/info/", timeout=30).json()
        assert info["models"]["medisee"]["medisee"]["weights"] == "default"
        assert requests.post(f"{server.url}/train/medisee", json={}, timeout=30).status_code == 200
        wait_for(lambda: requests.get(f"{server.url}/train/", timeout=30).json()["status"] not in ("SUBMITTED", "RUNNING"),
                 900, "the next retraining")
        status = requests.get(f"{server.url}/train/", timeout=30).json()
        assert status["status"] == "DONE", json.dumps(status)[-2000:]
        report = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["medisee"]
        assert report["mode"] == "fast" and "reasons" in report
        assert "interrupted" not in requests.get(f"{server.url}/datastore/?output=all", timeout=30).json()["objects"]


def test_sigterm_to_the_launcher_stops_everything_it_started(studies_template, tmp_path):
    port = free_port()
    run = Path(__file__).resolve().parents[2] / "scripts" / "run.sh"
    launcher = subprocess.Popen([str(run), "--studies", str(studies_template / "studies"), "--port", str(port),
                                 "--conf", "models_dir", str(tmp_path / "models")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/info/"), 180, "the server to answer")
        group = [p for p in psutil.process_iter() if _group(p) == launcher.pid]
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(30)
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in group), 30,
                 "every process the launcher started to stop")
        assert not _answers(f"http://127.0.0.1:{port}/info/")
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _group(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, psutil.Error):
        return None

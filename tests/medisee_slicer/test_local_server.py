"""Local mode: the module starts a real MediSee server as a background process, uses it, and stops it."""

from __future__ import annotations

import shutil
import sys

import pytest
import requests
from MediSeeLib.client import MediSeeClient
from MediSeeLib.errors import LocalServerError
from MediSeeLib.local_server import LocalServer, free_port, serve_command


def test_a_local_server_starts_streams_its_log_answers_and_stops(slicer_studies, tmp_path):
    shutil.copytree(slicer_studies / "studies", tmp_path / "studies")
    port, lines = free_port(), []
    conf = [("mode", "fast"), ("models_dir", str(tmp_path / "models"))]
    server = LocalServer(serve_command(sys.executable, str(tmp_path / "studies"), port, conf), f"http://127.0.0.1:{port}",
                         on_log=lines.append, cwd=str(tmp_path))
    server.start()
    try:
        server.wait_until_ready(timeout=120)
        assert MediSeeClient(server.url).connect()["models"]["medisee"]["medisee"]["device"] == "cpu"
        assert any("[medisee] MONAI Label + MediSee on" in line for line in lines)
    finally:
        code = server.stop()
    assert not server.running and code is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/info/", timeout=2)


def test_a_server_that_exits_at_start_up_reports_its_log(tmp_path):
    port = free_port()
    command = serve_command(sys.executable, str(tmp_path / "missing"), port)
    server = LocalServer(command, f"http://127.0.0.1:{port}")
    server.start()
    with pytest.raises(LocalServerError) as caught:
        server.wait_until_ready(timeout=60)
    assert "exited" in caught.value.user_message and "no such folder" in caught.value.user_message
    server.stop()


def test_a_missing_program_is_a_clear_error():
    with pytest.raises(LocalServerError) as caught:
        LocalServer(["/no/such/PythonSlicer", "-m", "x"], "http://127.0.0.1:1").start()
    assert "could not be run" in caught.value.user_message

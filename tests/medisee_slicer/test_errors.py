"""The failures a user meets, each as its exception with a plain message: no server, the wrong server, a slow one."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from MediSeeLib.client import MediSeeClient, normalize_url
from MediSeeLib.errors import (EmptyQuery, MediSeeError, NoMediSeeModel, NoVolumeSelected, RequestTimedOut, ServerFailed,
                               ServerRejected, ServerUnreachable)
from MediSeeLib.scope import Scope, request_params
from MediSeeLib.workflow import ask


class FakeServer(BaseHTTPRequestHandler):
    """Answers like a MONAI Label server with other models; ``/slow`` paths sleep; ``/infer`` fails as configured."""

    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/info/"):
            self._json(200, {"name": "Other", "models": {"segmentation_spleen": {}}})
        else:
            self._json(404, {"detail": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if "sleep" in self.path:
            time.sleep(1.5)
        self._json(self.server.infer_status, {"detail": "something specific went wrong"})

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def fake_server(infer_status: int = 200) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    httpd.infer_status = infer_status
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server():
    client = MediSeeClient(f"127.0.0.1:{closed_port()}")
    with pytest.raises(ServerUnreachable) as caught:
        client.info()
    assert "Cannot reach the MediSee server at http://127.0.0.1:" in caught.value.user_message


def test_a_server_without_a_medisee_model():
    with fake_server() as url, pytest.raises(NoMediSeeModel) as caught:
        MediSeeClient(url).connect()
    assert "no 'medisee' model" in caught.value.user_message and "segmentation_spleen" in caught.value.user_message


def test_a_request_that_times_out():
    with fake_server() as url, pytest.raises(RequestTimedOut) as caught:
        MediSeeClient(url).infer("sleep", {"query": "liver?"}, timeout=0.3)
    assert "did not answer the question within" in caught.value.user_message


def test_a_4xx_carries_the_servers_detail():
    with fake_server(422) as url, pytest.raises(ServerRejected) as caught:
        MediSeeClient(url).infer("ct-a", {"query": "liver?"})
    assert caught.value.status == 422 and caught.value.user_message.endswith("something specific went wrong")


def test_a_5xx_or_an_unreadable_answer_is_a_server_failure():
    with fake_server(500) as url, pytest.raises(ServerFailed):
        MediSeeClient(url).infer("ct-a", {"query": "liver?"})
    with fake_server(200) as url, pytest.raises(ServerFailed) as caught:  # JSON that is not an answer, named
        ask(MediSeeClient(url), "ct-a", {"query": "liver?"})
    assert "cannot read (answer: the field 'schema_version' is missing)" in caught.value.user_message


def test_empty_query_and_no_volume_are_caught_before_sending():
    with pytest.raises(EmptyQuery):
        request_params("   ", Scope("all"))
    with pytest.raises(NoVolumeSelected) as caught:
        request_params("Where is the liver?", Scope("all"), volume_selected=False)
    assert "No input volume" in caught.value.user_message


def test_every_error_has_a_user_message_without_a_traceback():
    errors = [ServerUnreachable("http://x"), NoMediSeeModel("http://x", []), EmptyQuery(), NoVolumeSelected(),
              RequestTimedOut("the question", 5), ServerRejected(413, "too long"), ServerFailed("500")]
    for error in errors:
        assert isinstance(error, MediSeeError) and error.user_message and "Traceback" not in error.user_message


def test_urls_are_normalised():
    assert normalize_url(" localhost:8000/ ") == "http://localhost:8000"
    assert normalize_url("https://h/x/") == "https://h/x"

"""The gateway (``lib/gateway.py``) in front of a small ASGI app: size limits, errors that
leak nothing, cross-site pages turned away."""

from __future__ import annotations

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.testclient import TestClient

from monailabel_app.lib.gateway import Gateway
from monailabel_app.lib.policy import EndpointPolicy

inner = FastAPI()


@inner.get("/info/")
def info():
    return {"ok": True}


@inner.post("/infer/{model}")
def infer(model: str, file: UploadFile = File(...)):
    if model == "crash":
        raise RuntimeError("/secret/server/path failed")
    if model == "own500":
        raise HTTPException(500, 'Traceback (most recent call last):\n  File "/secret/app.py", line 1')
    return {"bytes": len(file.file.read())}


@inner.post("/activelearning/{strategy}")
def sample(strategy: str, params: dict):
    return params


client = TestClient(Gateway(inner, EndpointPolicy(), max_upload_bytes=1 << 20), raise_server_exceptions=False)


def test_requests_within_the_limits_pass():
    assert client.post("/infer/medisee", files={"file": ("a.nii.gz", b"x" * 1000)}).json() == {"bytes": 1000}
    assert client.post("/activelearning/random", json={"query": "liver"}).json() == {"query": "liver"}


def test_bodies_over_the_limit_are_413():
    response = client.post("/infer/medisee", files={"file": ("a.nii.gz", b"x" * (2 << 20))})
    assert response.status_code == 413 and "1 MiB" in response.json()["detail"]
    response = client.post("/activelearning/random", json={"query": "x" * 100_000})
    assert response.status_code == 413 and "64 KiB" in response.json()["detail"]

    def streamed():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        for _ in range(40):
            yield b"x" * 65536
        yield b"\r\n--b--\r\n"

    response = client.post("/infer/medisee", content=streamed(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413


def test_failures_leak_no_path_or_traceback():
    for model in ("crash", "own500"):
        response = client.post(f"/infer/{model}", files={"file": ("a", b"x")})
        assert response.status_code == 500
        assert "secret" not in response.text and "Traceback" not in response.text
        assert "incident" in response.json()["detail"]


def test_turned_off_and_cross_site_requests_never_reach_the_app():
    assert client.get("/logs/").status_code == 403
    assert client.get("/info/", headers={"origin": "http://evil.example"}).status_code == 403
    assert client.get("/info/", headers={"origin": "http://testserver"}).status_code == 200

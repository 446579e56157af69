"""The MONAI Label server over HTTP, with every failure turned into a :mod:`.errors` exception.

Endpoints are MONAI Label's (the same ones its Slicer plugin and ``monailabel.client`` use):
``/info/``, ``/infer/medisee``, ``/datastore/image``, ``/datastore/label``, ``/activelearning/...``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import requests

from .errors import EmptyQuery, NoMediSeeModel, RequestTimedOut, ServerFailed, ServerRejected, ServerUnreachable
from .multipart import InferAnswer, parse_infer_response

MODEL = "medisee"
STRATEGY = "medisee_uncertainty"


class MediSeeClient:
    """One server. ``timeout`` covers quick calls; ``infer_timeout`` a question (whole volumes take a while)."""

    def __init__(self, url: str, timeout: float = 10.0, infer_timeout: float = 600.0, token: str | None = None) -> None:
        self.url = normalize_url(url)
        self.timeout = timeout
        self.infer_timeout = infer_timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def info(self) -> dict:
        return self._request("GET", "/info/", "the connection request").json()

    def connect(self) -> dict:
        """``/info/``, checked: :class:`NoMediSeeModel` if the server does not serve the medisee model."""
        info = self.info()
        models = info.get("models") or {}
        if MODEL not in models:
            raise NoMediSeeModel(self.url, sorted(models))
        return info

    def infer(self, image_id: str, params: dict[str, Any], timeout: float | None = None) -> InferAnswer:
        """Ask ``params["query"]`` about the datastore image (or server-side path) ``image_id``."""
        query = params.get("query")
        if not isinstance(query, str) or not query.strip():
            raise EmptyQuery()
        response = self._request("POST", f"/infer/{MODEL}", "the question", params={"image": image_id},
                                 data={"params": json.dumps(params)}, timeout=timeout or self.infer_timeout)
        return parse_infer_response(response.content, response.headers.get("content-type", ""))

    def upload_image(self, path: str | Path, image_id: str) -> dict:
        """Put a local volume file into the server's datastore under ``image_id`` (replacing it)."""
        with open(path, "rb") as handle:
            return self._request("PUT", "/datastore/image", "the image upload", params={"image": image_id},
                                 files={"file": (Path(path).name, handle)}, timeout=max(self.timeout, 120)).json()

    def save_label(self, image_id: str, path: str | Path, query: str, label_names: dict[int, str], tag: str = "final") -> dict:
        """Submit a corrected label (every label value named) for retraining; ``label_names`` goes out
        as MONAI Label names labels, phrase -> value."""
        params = {"query": query, "label_names": {name: int(value) for value, name in label_names.items()}}
        with open(path, "rb") as handle:
            return self._request("PUT", "/datastore/label", "the label submission", params={"image": image_id, "tag": tag},
                                 data={"params": json.dumps(params)}, files={"label": (Path(path).name, handle)},
                                 timeout=max(self.timeout, 120)).json()

    def download_image(self, image_id: str) -> tuple[bytes, str]:
        """The image file and its name (the extension says its format)."""
        response = self._request("GET", "/datastore/image", "the image download", params={"image": image_id},
                                 timeout=max(self.timeout, 120))
        found = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
        return response.content, found.group(1) if found else f"{image_id}.nii.gz"

    def download_label(self, image_id: str, tag: str = "final") -> bytes:
        return self._request("GET", "/datastore/label", "the label download", params={"label": image_id, "tag": tag}).content

    def next_sample(self, query: str | None = None, strategy: str = STRATEGY) -> dict:
        """The study active learning suggests labelling next: ``{"id": ..., ...}``."""
        params = {"query": query} if query else {}
        return self._request("POST", f"/activelearning/{strategy}", "the next-sample request", json=params,
                             timeout=max(self.timeout, 300)).json()

    def _request(self, method: str, path: str, what: str, timeout: float | None = None, **kwargs: Any) -> requests.Response:
        seconds = timeout or self.timeout
        try:
            response = requests.request(method, self.url + path, headers=self.headers, timeout=seconds, **kwargs)
        except requests.Timeout:
            raise RequestTimedOut(what, seconds) from None
        except requests.ConnectionError as err:
            raise ServerUnreachable(self.url, _reason(err)) from None
        except requests.RequestException as err:
            raise ServerUnreachable(self.url, str(err)) from None
        if 400 <= response.status_code < 500:
            raise ServerRejected(response.status_code, _detail(response))
        if response.status_code >= 500:
            raise ServerFailed(f"{response.status_code} {_detail(response)}")
        return response


def normalize_url(url: str) -> str:
    """``localhost:8000/`` -> ``http://localhost:8000``."""
    url = (url or "").strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
    return str(detail) if detail else (response.text.strip()[:300] or response.reason or "no detail")


def _reason(err: Exception) -> str:
    text = str(err)
    for marker in ("Connection refused", "Name or service not known", "nodename nor servname", "No route to host"):
        if marker in text:
            return marker.lower()
    return "no connection"

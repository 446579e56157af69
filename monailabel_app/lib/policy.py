"""Which of MONAI Label's endpoints this server answers: the product's own, and the groups an
admin turns on (``--conf enable logs,sessions``).

MONAI Label serves every endpoint it has to anyone who can reach the port. The product
(the Slicer module, the CLI, retraining) needs a few of them; the others read the log,
download every study, delete data or accept archives, and are off unless an admin turns
their group on. ``docs/SECURITY.md`` lists the groups."""

from __future__ import annotations

import re
from dataclasses import dataclass

# group -> what turning it on exposes (shown in --help, the refusal and docs/SECURITY.md)
GROUPS = {
    "sessions": "/session/ (MONAI Label sessions: upload an image once, infer by session id)",
    "logs": "/logs/ (the server log: every request's question, paths and errors)",
    "dataset": "GET /datastore/dataset (every image and label as one zip)",
    "deletes": "DELETE of images and labels in the datastore",
    "info_edits": "PUT /datastore/image/info and /datastore/label/info (edit stored metadata directly)",
    "models": "/model/ (download, replace or delete the weights files of MONAI Label models)",
    "extras": "/batch/, /scoring/, /proxy/, /ohif/ and the WSI infer endpoints (not used by MediSee)",
}

_PRODUCT = (  # (methods, path pattern): always on
    ("GET", r"/|/docs|/openapi\.json|/favicon\.ico|/static/.*"),
    ("GET", r"/info/?"),
    ("POST", r"/infer/(?!wsi)[^/]+"),
    ("GET", r"/datastore/?"),
    ("GET HEAD PUT", r"/datastore/image"),
    ("GET HEAD PUT", r"/datastore/label"),
    ("GET", r"/datastore/(image|label)/info"),
    ("POST", r"/activelearning/[^/]+"),
    ("GET DELETE", r"/train/?"),
    ("POST", r"/train/[^/]+"),
    ("GET POST", r"/auth/.*"),
)
_GROUPED = (  # (group, methods, path pattern)
    ("sessions", "GET PUT DELETE", r"/session/.*"),
    ("logs", "GET", r"/logs/.*"),
    ("dataset", "GET", r"/datastore/dataset"),
    ("deletes", "DELETE", r"/datastore/(image|label)?"),
    ("info_edits", "PUT", r"/datastore/(image/info|label/info|updatelabelinfo)"),
    ("models", "GET PUT DELETE", r"/model/.*"),
    ("extras", "GET POST DELETE", r"/(batch|scoring|proxy|ohif)/.*|/infer/wsi.*"),
)


_SESSION_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str


@dataclass(frozen=True)
class EndpointPolicy:
    enabled: frozenset[str] = frozenset()

    def refusal(self, method: str, path: str, query: dict[str, str]) -> Refusal | None:
        """Why a request may not reach MONAI Label (None: it may)."""
        method = "GET" if method == "HEAD" else method  # every HEAD this server answers has its GET
        for group, methods, pattern in _GROUPED:
            if method in methods.split() and re.fullmatch(pattern, path):
                if group in self.enabled:
                    return self._parameters(path, query)
                return Refusal(403, f"{method} {path} is turned off on this server ({GROUPS[group]}); "
                                    f"an admin can turn it on with --conf enable {group} (docs/SECURITY.md)")
        if not any(method in methods.split() and re.fullmatch(pattern, path) for methods, pattern in _PRODUCT):
            return Refusal(404, f"{method} {path}: no such endpoint on this server")
        return self._parameters(path, query)

    def _parameters(self, path: str, query: dict[str, str]) -> Refusal | None:
        """Query parameters that reach further than the endpoint itself."""
        if path.startswith("/infer/") and query.get("session_id"):
            if "sessions" not in self.enabled:
                return Refusal(403, "session_id needs sessions, which are turned off on this server "
                                    "(an admin can turn them on with --conf enable sessions)")
            if not _SESSION_ID.fullmatch(query["session_id"]):
                return Refusal(400, "a session id is letters, digits and '-' (as PUT /session/ returned it)")
        session = re.fullmatch(r"/session/(.+)", path)
        if session and not _SESSION_ID.fullmatch(session.group(1)):
            return Refusal(400, "a session id is letters, digits and '-' (as PUT /session/ returned it)")
        if path.startswith("/session") and query.get("uncompress", "").lower() in ("1", "true", "yes"):
            return Refusal(400, "archives (uncompress=true) are not accepted: upload the image file itself")
        if path.startswith("/train") and query.get("run_sync", "").lower() in ("1", "true", "yes"):
            return Refusal(400, "run_sync is not accepted: training runs in its own process (poll GET /train/)")
        return None

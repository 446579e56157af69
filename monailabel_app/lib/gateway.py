"""The server's front door: an ASGI layer in front of MONAI Label's app.

Three jobs, each one a rule every request meets before any endpoint code runs:
- the endpoint policy (``policy.EndpointPolicy``): endpoints the product does not use are
  off, and web pages of other sites are turned away;
- request size: a body over the limit is refused with 413 (by its ``Content-Length``, or
  while it streams in), before it can fill the disk;
- errors never leak: an exception, or a 5xx an endpoint wrote itself (MONAI Label puts
  tracebacks and server paths into some), reaches the client as one line with an incident
  number; the log keeps the details under that number.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .policy import EndpointPolicy, Refusal

log = logging.getLogger("medisee.server.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_BODY_LIMIT = 64 * 1024  # requests without a file (active learning, training) are small JSON


class BodyTooLarge(Exception):
    """The request body streamed past its limit."""


class Gateway:
    def __init__(self, app: ASGIApp, policy: EndpointPolicy, max_upload_bytes: int) -> None:
        self.app = app
        self.policy = policy
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        refusal = self.policy.refusal(method, path, query) or _cross_site(scope)
        if refusal is not None:
            log.warning("refused %s %s (%d): %s", method, path, refusal.status, refusal.detail)
            await respond(send, refusal.status, refusal.detail)
            return
        limit = self._limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await respond(send, 413, _too_large(limit))
            return
        await self._forward(scope, receive, send, limit)

    def _limit(self, scope: Scope) -> int:
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"")
        return self.max_upload_bytes if content_type.startswith(b"multipart/") else JSON_BODY_LIMIT

    async def _forward(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app; a body past ``limit`` becomes 413 whatever the app made of it (FastAPI
        turns a failing read into 400 or 500); any 5xx it writes, or an exception it raises,
        becomes one line with an incident number."""
        incident = uuid.uuid4().hex[:8]
        state = {"seen": 0, "too_large": False, "started": False, "dropping": False}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["too_large"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if state["too_large"] or message["status"] >= 500:
                    state["dropping"] = True
                    if state["too_large"]:
                        await respond(send, 413, _too_large(limit))
                    else:
                        log.error("incident %s: %s %s answered %d", incident, scope["method"], scope["path"],
                                  message["status"])
                        await respond(send, message["status"], _internal(incident))
                    return
            if state["dropping"]:
                if message["type"] == "http.response.body" and message.get("body") and not state["too_large"]:
                    log.error("incident %s: the answer was %r", incident, message["body"][:2000])
                return
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            if not state["started"]:
                await respond(send, 413, _too_large(limit))
        except Exception:
            log.exception("incident %s: %s %s failed", incident, scope["method"], scope["path"])
            if not state["started"]:
                await respond(send, 500, _internal(incident))


def _cross_site(scope: Scope) -> Refusal | None:
    """A browser page from another site (its ``Origin`` is not this server) may not use the
    server: MONAI Label allows every origin, so any web page could otherwise read studies
    from a radiologist's loopback server. Slicer and scripts send no ``Origin``."""
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin")
    if origin is None:
        return None
    if urlsplit(origin.decode("latin-1")).netloc == headers.get(b"host", b"").decode("latin-1"):
        return None
    return Refusal(403, "requests from web pages of other sites are refused")


def _content_length(scope: Scope) -> int | None:
    value = dict(scope.get("headers", [])).get(b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _too_large(limit: int) -> str:
    return (f"the request body is larger than this server accepts ({limit // (1 << 20)} MiB)" if limit >= 1 << 20
            else f"the request body is larger than this server accepts for this endpoint ({limit // 1024} KiB)")


def _internal(incident: str) -> str:
    return f"the server could not answer this request (incident {incident}; the server log has the details)"


async def respond(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

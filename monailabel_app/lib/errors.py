"""Turning what a client got wrong into a specific HTTP 4xx, never a 500 with a traceback.

FastAPI answers an ``HTTPException`` raised anywhere below an endpoint with its status and
``detail``; MONAI Label's own endpoints let other exceptions become 500s."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException

from medisee.data.records import DataError
from medisee.imaging import ImageReadError
from medisee.predictor import PredictionInputError

log = logging.getLogger("medisee.server")

BAD_REQUEST = 400
NOT_FOUND = 404
CONFLICT = 409
PAYLOAD_TOO_LARGE = 413
UNSUPPORTED_MEDIA = 415
UNPROCESSABLE = 422


class ClientError(HTTPException):
    """A request problem the client can fix; ``detail`` says how."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)
        log.warning("rejected request (%d): %s", status, detail)


@contextmanager
def client_errors(what: str = "", hide: str | None = None) -> Iterator[None]:
    """Map the library's input errors raised inside the block to 4xx answers. ``what`` names
    the thing at fault in place of ``hide`` (a server-side temporary path) in the message."""
    try:
        yield
    except HTTPException:
        raise
    except (ImageReadError, PredictionInputError, DataError, IndexError) as err:
        status = UNSUPPORTED_MEDIA if isinstance(err, ImageReadError) else UNPROCESSABLE
        text = str(err)
        if hide and hide in text:
            text = text.replace(hide, what)
        elif what:
            text = f"{what}: {text}"
        raise ClientError(status, text) from None

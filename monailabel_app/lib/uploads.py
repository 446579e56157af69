"""Uploaded files and answer files on the server's disk: in the server's own scratch folder,
removed on every way out of a request, and swept at start-up after a kill.

MONAI Label's endpoints copy uploads to the system temp folder and delete them only after a
successful answer, so every refused or interrupted upload stayed there. Here an upload lives
in a private folder under ``<models_dir>/scratch`` for exactly as long as its request."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import UploadFile

from .errors import UNPROCESSABLE, ClientError

log = logging.getLogger("medisee.server.uploads")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


@contextmanager
def saved_upload(upload: UploadFile | None, scratch: Path) -> Iterator[Path | None]:
    """``upload`` copied into a private folder under ``scratch`` (None for no upload); the
    folder is removed when the block ends, however it ends."""
    if upload is None:
        yield None
        return
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch))
    try:
        path = folder / ("upload" + file_suffix(upload.filename))
        with open(path, "wb") as handle:
            shutil.copyfileobj(upload.file, handle, 1 << 20)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def file_suffix(filename: str | None) -> str:
    """The file type suffixes of a client's file name (".nii.gz"), nothing else of it: the
    name itself never reaches the server's disk."""
    suffixes = [s for s in Path(filename or "").suffixes if _SUFFIX.fullmatch(s)]
    return "".join(suffixes[-2:]) or ".nii.gz"


def sweep(scratch: Path) -> int:
    """Remove what a killed server left in ``scratch``; the number of entries removed."""
    if not scratch.is_dir():
        return 0
    removed = 0
    for entry in scratch.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("removed %d file(s) an interrupted request left in %s", removed, scratch)
    return removed


def json_object(text: str | None, what: str) -> dict[str, Any]:
    """A form field that must hold a JSON object (MONAI Label's ``params``)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ClientError(UNPROCESSABLE, f"{what} is not valid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(value, dict):
        raise ClientError(UNPROCESSABLE, f'{what} must be a JSON object such as {{"query": "..."}}, '
                          f"not {type(value).__name__}")
    return value

"""The endpoints the product uses, answered in front of MONAI Label's own.

Same paths, parameters and answers as MONAI Label's (the Slicer module and
``monailabel.client`` work unchanged), same auth (MONAI Label's ``RBAC`` dependency), but:
``params`` must be a JSON object (else 422, not a 500); uploads live in the server's scratch
folder only for their request (``uploads``); the work runs in FastAPI's thread pool, so a
long inference does not stop the server from answering uploads, ``/info/`` or label saves;
a client's ``params`` cannot replace the image or model the request names; training status
carries no server paths or tracebacks."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends, File, Form, UploadFile
from monailabel.config import settings as monai_settings
from monailabel.endpoints import activelearning, train
from monailabel.endpoints.infer import ResultType, send_response
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.utils.app import app_instance

from .datastore import MediSeeDatastore, check_id
from .errors import BAD_REQUEST, NOT_FOUND, UNPROCESSABLE, ClientError
from .uploads import json_object, saved_upload

log = logging.getLogger("medisee.server.endpoints")
router = APIRouter()
USER, ANNOTATOR = monai_settings.MONAI_LABEL_AUTH_ROLE_USER, monai_settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
ADMIN = monai_settings.MONAI_LABEL_AUTH_ROLE_ADMIN
MAX_STEPS = 100_000  # a retraining request's step count
# a server path or a traceback line in a training task's output
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.\-+@]+){2,}/?")
_TRACE = re.compile(r'^\s*(Traceback \(most recent call last\)|File ".*", line \d+)')


def _app() -> MONAILabelApp:
    return app_instance()


def _scratch() -> Path:
    return _app().settings.scratch_dir


@router.post("/infer/{model}")
def infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile | None = File(None),
    output: ResultType | None = None,
    user: User = Depends(RBAC(USER)),
):
    """Run ``model`` on a datastore image, an uploaded ``file`` or a session's image."""
    instance = _app()
    request_params = json_object(params, "params")
    if not file and not image and not session_id:
        raise ClientError(BAD_REQUEST, "name an image (?image=ID) or upload one (a 'file' form field)")
    if output == ResultType.dicom_seg:
        raise ClientError(UNPROCESSABLE, "output dicom_seg is not offered: ask for json, image or all")
    with saved_upload(file, _scratch()) as uploaded:
        request: dict[str, Any] = instance.info().get("config", {}).get("infer", {}) | request_params
        request |= {"model": model, "image": str(uploaded) if uploaded else image, "server_file": uploaded is not None,
                    "image_id": Path(file.filename or "upload").name if uploaded else image}
        if session_id:
            session = instance.sessions().get_session(session_id)
            if session is None:
                raise ClientError(NOT_FOUND, f"unknown or expired session {session_id!r}")
            request |= {"image": session.image, "server_file": True, "image_id": f"session {session_id}",
                        "session": session.to_json()}
        result = instance.infer(request)
    return send_response(instance.datastore(), result, output, background_tasks)


@router.put("/datastore/image")
def add_image(
    image: str | None = None,
    params: str = Form("{}"),
    file: UploadFile = File(...),
    overwrite: bool = False,
    user: User = Depends(RBAC(ANNOTATOR)),
):
    """Store an uploaded study; an id already in the datastore needs ``overwrite=true``."""
    info = json_object(params, "params") | ({"user": user.username} if user.username else {})
    image_id = image or _id_from_filename(file.filename)
    datastore = _app().datastore()
    with saved_upload(file, _scratch()) as uploaded:
        if isinstance(datastore, MediSeeDatastore):
            stored = datastore.add_image(image_id, str(uploaded), info, overwrite=overwrite)
        else:
            stored = datastore.add_image(image_id, str(uploaded), info)
    return {"image": stored}


@router.put("/datastore/label")
def save_label(
    image: str,
    params: str = Form("{}"),
    tag: str = DefaultLabelTag.FINAL.value,
    label: UploadFile = File(...),
    user: User = Depends(RBAC(ANNOTATOR)),
):
    """Store a corrected label for a datastore image."""
    instance = _app()
    info = json_object(params, "params") | ({"user": user.username} if user.username else {})
    with saved_upload(label, _scratch()) as uploaded:
        label_id = instance.datastore().save_label(image, str(uploaded), tag or DefaultLabelTag.FINAL.value, info)
    return (instance.on_save_label(image, label_id) or {}) | {"image": image, "label": label_id}


@router.post("/activelearning/{strategy}")
def next_sample(strategy: str, params: dict | None = Body(None), user: User = Depends(RBAC(USER))):
    """The next study to label, by ``strategy``."""
    known = _app().info().get("strategies", {})
    if strategy not in known:
        raise ClientError(NOT_FOUND, f"unknown strategy {strategy!r}; this server has: {', '.join(known)}")
    return activelearning.sample(strategy, params or {}, user.username)


@router.post("/train/{model}")
def start_training(model: str, params: dict | None = Body(None), enqueue: bool = False,
                   user: User = Depends(RBAC(ADMIN))):
    """Start retraining ``model`` in MONAI Label's training process, its parameters checked first."""
    known = _app().info().get("trainers", {})
    if model not in known:
        raise ClientError(NOT_FOUND, f"unknown trainer {model!r}; this server has: {', '.join(known)}")
    params = params or {}
    steps = params.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
        raise ClientError(UNPROCESSABLE, f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}")
    tag = params.get("label_tag")
    if tag is not None:
        check_id(tag, "label_tag")
    return train.run_model(model, params, run_sync=False, enqueue=enqueue)


@router.get("/train/")
def training_status(all: bool = False, check_if_running: bool = False, user: User = Depends(RBAC(USER))):
    """MONAI Label's training status, its output lines without server paths or tracebacks."""
    return without_internals(train.status(all, check_if_running))


if not monai_settings.MONAI_LABEL_AUTH_ENABLE:  # MONAI Label serves /auth/ only when auth is on
    @router.get("/auth/")
    def auth_status():
        """Whether this server asks for a login (it does not)."""
        return {"enabled": False, "client_id": None, "realm": None}


def _id_from_filename(filename: str | None) -> str:
    name = Path(filename or "").name
    for suffix in reversed(Path(name).suffixes):
        name = name[: -len(suffix)]
    if not name:
        raise ClientError(BAD_REQUEST, "name the study (?image=ID): the upload has no file name to take it from")
    return name


def without_internals(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_internals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_internals(v) for v in value if not (isinstance(v, str) and _TRACE.match(v))]
    if isinstance(value, str):
        return _PATH.sub("<path>", value)
    return value

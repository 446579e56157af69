"""Reading MONAI Label's multipart answer (JSON ``params`` part + label file part) with the standard library,
so the module needs no requests-toolbelt in Slicer's Python; the JSON is read as the typed :class:`.answer.Answer`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

from .answer import Answer, AnswerFormatError
from .errors import ServerFailed


@dataclass
class InferAnswer:
    result: Answer  # the JSON: answer, label_names, entities, geometry, timing
    label: bytes | None  # the label volume file (None with ?output=json)
    label_name: str = "labels.nii.gz"


def parse_infer_response(content: bytes, content_type: str) -> InferAnswer:
    """Split a ``/infer`` answer: multipart (JSON + file), or JSON alone."""
    if content_type.startswith("application/json"):
        return InferAnswer(_json(content), None)
    if not content_type.startswith("multipart/"):
        raise ServerFailed(f"an answer of type {content_type or 'unknown'!r}")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + content)
    result, label, name = None, None, "labels.nii.gz"
    for part in message.iter_parts():
        payload = part.get_payload(decode=True) or b""
        if part.get_param("name", header="content-disposition") == "params":
            result = _json(payload)
        else:
            label, name = payload, part.get_filename() or name
    if result is None:
        raise ServerFailed("an answer without its JSON part")
    return InferAnswer(result, label, name)


def _json(content: bytes) -> Answer:
    try:
        value = json.loads(content)
    except ValueError:
        raise ServerFailed("an answer that is not valid JSON") from None
    try:
        return Answer.from_dict(value)
    except AnswerFormatError as err:
        raise ServerFailed(f"an answer this module cannot read ({err})") from None

"""MONAI Label's local folder datastore, made safe for corrected labels.

Changes to :class:`LocalDatastore`: uploads are checked before they are kept (an image must
be readable and at least ``MIN_SIDE`` pixels across; a label must be an integer volume the
shape of its image); a study is replaced only when the request says so, and then without its
old labels; ids are checked before anything is removed; every file the datastore writes
(images, labels, its JSON index) goes through a temporary file and a rename, so a crash or a
restart never leaves half a label behind, and the temporary files a kill left are removed
at start-up."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore

from medisee.atomic import copy_file, write_text
from medisee.data.corrections import label_names_of
from medisee.data.records import DataError
from medisee.imaging import read_image

from .errors import BAD_REQUEST, CONFLICT, NOT_FOUND, UNPROCESSABLE, ClientError, client_errors

log = logging.getLogger("medisee.server.datastore")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MIN_SIDE = 8  # pixels: smaller images cannot be segmented (and broke active learning for everyone)
_LEFTOVER = re.compile(r"\..+\.tmp")  # medisee.atomic's temporary names


class MediSeeDatastore(LocalDatastore):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for leftover in (p for p in Path(self._datastore_path).rglob(".*.tmp") if _LEFTOVER.fullmatch(p.name)):
            log.warning("removing %s, a half-written file left by an interrupted save", leftover.name)
            leftover.unlink(missing_ok=True)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any], overwrite: bool = False) -> str:
        derived, extension = self._to_id(os.path.basename(image_filename))
        image_id = image_id or derived
        check_id(image_id, "image id")
        if "*" + extension not in self._extensions:
            raise ClientError(BAD_REQUEST, f"uploaded file type {extension or '(none)'} is not kept here; "
                              f"send one of {', '.join(e.lstrip('*') for e in self._extensions)}")
        old = self._datastore.objects.get(image_id)
        if old is not None and not overwrite:
            raise ClientError(CONFLICT, f"image id {image_id!r} is already in the datastore (with {len(old.labels)} "
                              "label(s)); send overwrite=true to replace the study and drop its labels")
        with client_errors(f"the uploaded image {image_id!r}", hide=str(image_filename)):
            image = read_image(image_filename)
        if min(image.shape[-2:]) < MIN_SIDE:
            raise ClientError(UNPROCESSABLE, f"the uploaded image {image_id!r} is {image.shape}: "
                              f"slices must be at least {MIN_SIDE} pixels across")
        name = self._filename(image_id, extension)
        with FileLock(self._lock_file):
            if old is not None:
                self._drop(image_id, old, keep=name)
            copy_file(image_filename, Path(self._datastore.image_path()) / name)
            info = dict(image_info or {}, ts=int(time.time()), name=name, shape=list(image.shape))
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=extension))
            self._update_datastore_file(lock=False)
        log.info("stored image %s (%s, shape %s)", image_id, extension, image.shape)
        return image_id

    def _drop(self, image_id: str, record: ImageLabelModel, keep: str = "") -> None:
        """Remove a study's labels and image file (not ``keep``, a file about to be replaced)."""
        for tag, label in record.labels.items():
            Path(self._datastore.label_path(tag), self._filename(image_id, label.ext)).unlink(missing_ok=True)
        image = self._filename(image_id, record.image.ext)
        if image != keep:
            Path(self._datastore.image_path(), image).unlink(missing_ok=True)
        log.info("dropped %s and its %d label(s)", image_id, len(record.labels))

    def remove_image(self, image_id: str) -> None:
        check_id(image_id, "image id")
        record = self._datastore.objects.get(image_id)
        if record is None:
            raise ClientError(NOT_FOUND, f"unknown image id {image_id!r}")
        with FileLock(self._lock_file):
            self._drop(image_id, record)
            del self._datastore.objects[image_id]
            self._update_datastore_file(lock=False)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_id(label_id, "image id")
        check_id(label_tag, "label tag")
        record = self._datastore.objects.get(label_id)
        if record is None or label_tag not in record.labels:
            raise ClientError(NOT_FOUND, f"no {label_tag!r} label for image id {label_id!r}")
        with FileLock(self._lock_file):
            label = record.labels.pop(label_tag)
            Path(self._datastore.label_path(label_tag), self._filename(label_id, label.ext)).unlink(missing_ok=True)
            self._update_datastore_file(lock=False)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if not isinstance(label_tag, str):
            raise ClientError(BAD_REQUEST, f"label tag {label_tag!r}: send one name such as 'final'")
        check_id(label_tag, "label tag")
        record = self._datastore.objects.get(image_id)
        if record is None:
            raise ClientError(NOT_FOUND, f"unknown image id {image_id!r}: upload the image before its label")
        _, extension = self._to_id(os.path.basename(label_filename))
        with client_errors(f"the label for {image_id!r}", hide=str(label_filename)):
            label = read_image(label_filename)
        image = read_image(self.get_image_uri(image_id))
        check_label(label.array, label.shape, image.shape, label_info)
        name = self._filename(image_id, extension)
        folder = Path(self._datastore.label_path(label_tag))
        with FileLock(self._lock_file):
            folder.mkdir(parents=True, exist_ok=True)
            copy_file(label_filename, folder / name)
            info = dict(label_info or {}, ts=int(time.time()), name=name)
            record.labels[label_tag] = DataModel(info=info, ext=extension)
            self._update_datastore_file(lock=False)
        log.info("stored %s label for %s (labels %s)", label_tag, image_id, sorted(int(v) for v in np.unique(label.array) if v))
        return image_id

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            self._ignore_event_config = True
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            write_text(self._datastore_config_path, text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()


def check_id(value: str, what: str) -> None:
    """Ids and tags name files: letters, digits, '.', '_', '-', never a path."""
    if not isinstance(value, str) or not _ID.fullmatch(value) or value.endswith(".tmp"):
        raise ClientError(BAD_REQUEST, f"{what} {value!r}: use letters, digits, '.', '_' or '-' (up to 128)")


def check_label(array: np.ndarray, label_shape: tuple[int, ...], image_shape: tuple[int, ...], info: dict[str, Any] | None) -> None:
    """A label must be the image's shape, hold non-negative integers, and name its values
    when it carries names (``label_names`` either way round, or the stock Slicer plugin's
    ``label_info``); the retraining reads those names."""
    if tuple(label_shape) != tuple(image_shape):
        raise ClientError(UNPROCESSABLE, f"the label's shape {tuple(label_shape)} differs from the image's {tuple(image_shape)}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise ClientError(UNPROCESSABLE, "the label holds fractional values: send integer label values (0 = background)")
    if array.size and array.min() < 0:
        raise ClientError(UNPROCESSABLE, "the label holds negative values: send integer label values (0 = background)")
    if not {"label_names", "label_info"} & set(info or {}):
        return
    try:
        names = label_names_of(info)
    except DataError as err:
        raise ClientError(UNPROCESSABLE, str(err)) from None
    unnamed = sorted({int(v) for v in np.unique(array) if v} - set(names))
    if unnamed:
        raise ClientError(UNPROCESSABLE, f"label value(s) {unnamed} have no name in label_names (or label_info)")

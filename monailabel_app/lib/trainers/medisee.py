"""The ``medisee`` trainer: retrain on the labels radiologists corrected and submitted.

Each final label in the datastore, with the query and label names it was submitted with
(from MediSee's module, or the segment list of MONAI Label's own Slicer plugin),
becomes training samples (``medisee.data.corrections``); ``training.retrain`` trains from the
served checkpoint with DeepSpeed, evaluates before and after, in the mode the server serves,
on held-out studies and on reference phantoms, and the new checkpoint is served only when
it is no worse (``training.retrain.judge``). MONAI Label runs this in its own
process; the report lands in ``<models_dir>/last_retrain.json`` and in ``/info/``'s
``train_stats``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from medisee.atomic import write_json
from medisee.data.corrections import Correction, label_names_of
from medisee.data.records import DataError
from training.retrain import retrain

from ..served_model import ServedModel
from .process import end_with_parent, exclusive_training, in_training_process

log = logging.getLogger("medisee.server.train")
REPORT = "last_retrain.json"


class MediSeeTrainer(TrainTask):
    def __init__(self, served: ServedModel) -> None:
        super().__init__("Retrain MediSee on submitted (final) labels; serve the result only if it is no worse on held-out studies")
        self.served = served

    def config(self) -> dict[str, Any]:
        return {"steps": self.served.settings.retrain_steps, "label_tag": DefaultLabelTag.FINAL.value}

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads((self.served.settings.models_dir / REPORT).read_text())
        except (OSError, ValueError):
            return {}

    def __call__(self, request: dict, datastore: Datastore) -> dict[str, Any]:
        """Runs in MONAI Label's training process: one at a time per models folder, ended
        with the server that started it, judged in the mode the server serves."""
        settings = self.served.settings
        if in_training_process():
            end_with_parent()
        with exclusive_training(settings.models_dir):
            tag = request.get("label_tag") or DefaultLabelTag.FINAL.value
            steps = int(request.get("steps") or settings.retrain_steps)
            corrections = collect_corrections(datastore, tag)
            if not corrections:
                raise ValueError(f"no '{tag}' labels with label names in the datastore: submit corrected labels first")
            base = self.served.current_dir()
            work_dir = settings.models_dir / "retrain" / time.strftime("%Y%m%d-%H%M%S")
            log.info("retraining %s on %d corrected studies, %d steps, judged in %s mode, in %s", base,
                     len(corrections), steps, settings.mode, work_dir)
            report = retrain(base, corrections, work_dir, steps=steps, mode=settings.mode)
            result = report.to_dict() | {"base_model": str(base), "served": str(base)}
            if report.accepted:
                result["served"] = str(self.served.swap(report.new_model_dir, report.to_dict()))
            else:
                log.info("kept %s: %s", base, "; ".join(report.reasons))
            write_json(settings.models_dir / REPORT, result)
            return result


def collect_corrections(datastore: Datastore, tag: str) -> list[Correction]:
    """Every image with a ``tag`` label whose info names its label values (``label_names`` from
    MediSee's module or any client, ``label_info`` from MONAI Label's Slicer plugin)."""
    corrections = []
    for image_id in datastore.get_labeled_images(label_tag=tag):
        info = datastore.get_label_info(image_id, tag) or {}
        try:
            names = label_names_of(info)
        except DataError as err:
            log.warning("skipping the %s label of %s: %s", tag, image_id, err)
            continue
        if not names:
            log.warning("skipping the %s label of %s: it was submitted without label names", tag, image_id)
            continue
        corrections.append(Correction(
            image=datastore.get_image_uri(image_id), label=datastore.get_label_uri(image_id, tag),
            label_names=names, query=info.get("query") or "", axis=info.get("axis") or "axial",
        ))
    return corrections

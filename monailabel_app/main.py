"""MONAI Label app hosting MediSee.

    .venv/bin/python -m monailabel.main start_server --app monailabel_app --studies DIR \\
        --conf weights default --conf device cpu

``--conf`` options (all optional): weights (``default`` = the bundled tiny model, or a MediSee
checkpoint folder), device (cpu, cuda, auto), precision (fp32, bf16, fp16), threshold (entity
score below which nothing is reported), batch_size (slices per batch), mode (full or fast),
models_dir (where retrained checkpoints and the scratch folder go; default ``<app>/model``),
retrain_steps, max_query_chars, max_upload_mb, image_folders (server folders an image id may
name by path), enable (endpoint groups beyond the product's: ``lib/policy.py``). Tasks: infer ``medisee`` and
``medisee_segment`` (the question as a segment's name, for MONAI Label's own Slicer plugin), trainer ``medisee``, strategies
``medisee_uncertainty``, ``first`` and ``random``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# MONAI Label loads this file by path; make the repository importable for ``monailabel_app.lib``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings as monailabel_settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.exception import MONAILabelException  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

import medisee  # noqa: E402
from monailabel_app.lib.activelearning.uncertainty import MediSeeUncertainty  # noqa: E402
from monailabel_app.lib.datastore import MediSeeDatastore  # noqa: E402
from monailabel_app.lib.errors import BAD_REQUEST, NOT_FOUND, ClientError  # noqa: E402
from monailabel_app.lib.infers.by_segment import NAME as BY_SEGMENT  # noqa: E402
from monailabel_app.lib.infers.by_segment import MediSeeBySegment  # noqa: E402
from monailabel_app.lib.infers.medisee import MediSeeInfer  # noqa: E402
from monailabel_app.lib.served_model import ServedModel  # noqa: E402
from monailabel_app.lib.settings import AppSettings  # noqa: E402
from monailabel_app.lib.trainers.medisee import MediSeeTrainer  # noqa: E402

log = logging.getLogger("medisee.server")


class MediSeeApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.settings = AppSettings.from_conf(conf or {}, app_dir)
        self.served = ServedModel(self.settings)
        # dcmqi's itkimage2segimage (pip package dcmqi) lives beside this interpreter; MONAI
        # Label's DICOMweb datastore downloads its own copy unless it is on PATH.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        log.info("MediSee %s: serving %s on %s (%s)", medisee.__version__, self.served.current(),
                 self.settings.torch_device, self.settings.precision)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="MediSee",
                         description="Reasoning segmentation and detection: ask a question, get masks and boxes",
                         version=medisee.__version__)

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return MediSeeDatastore(self.studies, extensions=monailabel_settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                auto_reload=monailabel_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                read_only=monailabel_settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self):
        return {"medisee": MediSeeInfer(self.served), BY_SEGMENT: MediSeeBySegment(self.served)}

    def init_trainers(self):
        return {"medisee": MediSeeTrainer(self.served)}

    def init_strategies(self):
        return {"medisee_uncertainty": MediSeeUncertainty(self.served), "first": First(), "random": Random()}

    def infer(self, request, datastore=None):
        """Unknown models and images are the client's mistake: 404 with the name, not a 500.
        An image is a datastore id, or a file under ``--studies`` or a folder the admin listed
        (``--conf image_folders``); ``server_file`` marks the server's own copy of an upload."""
        model = request.get("model")
        if model not in self._infers:
            raise ClientError(NOT_FOUND, f"unknown model {model!r}; this server has: {', '.join(self._infers)}")
        image = request.get("image")
        if request.get("server_file"):
            return super().infer(request, datastore)
        if not isinstance(image, str) or not image:
            raise ClientError(BAD_REQUEST, "name an image (?image=ID) or upload one")
        return super().infer(dict(request, image=self._image_path(image, datastore or self.datastore()), image_id=image),
                             datastore)

    def _image_path(self, image: str, datastore: Datastore) -> str:
        """The file of a datastore id, or ``image`` itself when it is a path in an allowed folder."""
        unknown = f"unknown image id {image!r}: it is not in the datastore"
        try:
            uri = datastore.get_image_uri(image)
        except (MONAILabelException, HTTPException, OSError, ValueError):
            uri = None
        except Exception as err:  # DICOMweb errors come from requests/dicomweb-client
            log.warning("image %r could not be fetched from the datastore: %s", image, err)
            raise ClientError(NOT_FOUND, f"image {image!r} could not be fetched from the datastore") from None
        if uri and os.path.exists(uri):
            return uri
        if os.path.isabs(image) and self._allowed(Path(image)):
            return image
        raise ClientError(NOT_FOUND, unknown)  # the same answer whether or not such a file exists

    def _allowed(self, path: Path) -> bool:
        """Whether ``path`` (links resolved) exists inside the studies folder or an admin-listed one."""
        resolved = path.resolve()
        roots = [*self.settings.image_folders]
        if not self.studies.startswith(("http://", "https://")):
            roots.append(Path(self.studies).resolve())
        return resolved.exists() and any(resolved.is_relative_to(root) for root in roots)

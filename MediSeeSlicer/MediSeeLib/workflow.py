"""The module's steps on top of the client: ask about an image, submit a correction, fetch the next study."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from .client import MediSeeClient
from .errors import MediSeeError
from .geometry import Geometry
from .labels import write_label
from .results import InferenceResult, build_result


def image_id_for(name: str) -> str:
    """A datastore image id from a volume's name: letters, digits, ``-``, ``_``, ``.``; at most 128 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-.")[:128].rstrip("-.")
    return cleaned or "slicer-volume"


def models_text(info: dict) -> str:
    """The connected server's MediSee model (device, precision) and its other models, in one line."""
    models = info.get("models") or {}
    model = (models.get("medisee") or {}).get("medisee", {})
    others = [name for name in models if name != "medisee"]
    return f"medisee ({model.get('device', '?')}, {model.get('precision', '?')})" + (f"; also: {', '.join(others)}" if others else "")


AUTOMATIC_WINDOW = "automatic"


def window_choices(info: dict) -> list[str]:
    """The CT window presets the connected server offers (its ``/info/``), after "automatic"."""
    model = ((info.get("models") or {}).get("medisee") or {}).get("medisee", {})
    return [AUTOMATIC_WINDOW, *sorted(model.get("windows") or {})]


def ask(client: MediSeeClient, image_id: str, params: dict) -> InferenceResult:
    """One question about a server-side image -> segments and geometry."""
    return build_result(client.infer(image_id, params))


def submit_label(client: MediSeeClient, image_id: str, labels: np.ndarray, geometry: Geometry, query: str,
                 label_names: dict[int, str]) -> dict:
    """Send the (corrected) label volume for ``query``; every painted value must be named."""
    painted = {int(v) for v in np.unique(labels)} - {0}
    unnamed = painted - set(label_names)
    if unnamed:
        raise MediSeeError(f"Label values {sorted(unnamed)} have no segment name: name every segment before submitting.")
    names = [n for v, n in label_names.items() if v in painted]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MediSeeError(f"Several segments are named {', '.join(repeated)}: give each segment its own name before submitting.")
    with tempfile.TemporaryDirectory(prefix="medisee-submit-") as folder:
        path = write_label(labels, geometry, Path(folder) / f"{image_id}.nii.gz")
        return client.save_label(image_id, path, query, {v: n for v, n in label_names.items() if v in painted})


def fetch_next(client: MediSeeClient, folder: str | Path, query: str | None = None) -> tuple[str, Path]:
    """The study active learning picks next, downloaded into ``folder``: (image id, file)."""
    chosen = client.next_sample(query)
    image_id = str(chosen["id"])
    data, name = client.download_image(image_id)
    suffix = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix or ".nii.gz"
    path = Path(folder) / f"{image_id_for(image_id)}{suffix}"
    path.write_bytes(data)
    return image_id, path

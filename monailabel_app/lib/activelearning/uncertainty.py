"""``medisee_uncertainty``: the next study to label is the one the model is least sure of.

Uncertainty (``medisee.uncertainty``) combines how close the grounding score is to 0.5 and
how low the mask decoder rates its own mask, on a few slices through the middle of each
unlabelled study. Scores are remembered per (study, query, served model), so asking again
only scores new studies."""

from __future__ import annotations

import logging
import random
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

from medisee.imaging import ImageReadError, read_image
from medisee.predictor import PredictionInputError
from medisee.uncertainty import image_uncertainty

from ..errors import UNPROCESSABLE, ClientError
from ..served_model import ServedModel

log = logging.getLogger("medisee.server.activelearning")
DEFAULT_QUERY = "Which organ in this image is abnormal or most relevant?"
MAX_CANDIDATES = 32


class MediSeeUncertainty(Strategy):
    def __init__(self, served: ServedModel) -> None:
        super().__init__("The unlabelled study the model is least sure about (grounding score near 0.5, low mask quality)")
        self.served = served
        self.scores: dict[tuple[str, str, str], float] = {}

    def __call__(self, request: dict, datastore: Datastore) -> dict[str, Any]:
        unlabelled = datastore.get_unlabeled_images(label_tag=DefaultLabelTag.FINAL.value)
        if not unlabelled:
            return {}
        query = request.get("query") or DEFAULT_QUERY
        if not isinstance(query, str) or len(query) > self.served.settings.max_query_chars:
            raise ClientError(UNPROCESSABLE, f"query must be a question of at most "
                              f"{self.served.settings.max_query_chars} characters")
        candidates = sorted(unlabelled)
        if len(candidates) > MAX_CANDIDATES:
            candidates = random.Random(len(candidates)).sample(candidates, MAX_CANDIDATES)
        scored = {}
        with self.served.lock:
            predictor = self.served.predictor()
            model = self.served.current()
            for image_id in candidates:
                key = (image_id, query, model)
                if key not in self.scores:
                    try:
                        image = read_image(datastore.get_image_uri(image_id))
                        self.scores[key] = image_uncertainty(predictor, image, query).value
                    except (ImageReadError, PredictionInputError, ValueError) as err:  # one bad study skips itself
                        log.warning("not scoring %s: %s", image_id, err)
                        continue
                scored[image_id] = self.scores[key]
        if not scored:
            return {}
        chosen = max(scored, key=lambda i: (scored[i], i))
        log.info("next sample %s (uncertainty %.3f of %d scored)", chosen, scored[chosen], len(scored))
        return {"id": chosen, "uncertainty": round(scored[chosen], 4), "query": query,
                "scores": {k: round(v, 4) for k, v in sorted(scored.items(), key=lambda kv: -kv[1])}}

"""``/infer/medisee_segment``: MediSee as MONAI Label's own Slicer plugin can ask it without its
developer mode, where the model options (and so ``query``) are hidden.

The plugin lists ``deepgrow`` models under its interactive ("SmartEdit") section whatever the
mode, and for them sends the current segment's name as ``label`` and the clicks on it as
``foreground`` / ``background`` voxel indices ``[i, j, k]``; for a 3D model it imports the
answer's label value 1 into that segment. So: the segment's name is the question ("liver",
"which organ makes bile?"), the last foreground click (if any) is a point prompt on its slice
and chooses that slice, and the answer is one label, every structure the answer names, in
that segment. Without a click the middle slice (or the ``slice`` option) is asked.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType

from medisee.imaging import MedicalImage, acquisition_axis, slice_axis
from medisee.study import StudyAnswer, StudyQuestion

from ..errors import UNPROCESSABLE, ClientError
from ..served_model import ServedModel
from .medisee import MediSeeInfer, parse_question

NAME = "medisee_segment"


class MediSeeBySegment(MediSeeInfer):
    def __init__(self, served: ServedModel) -> None:
        super().__init__(served, type=InferType.DEEPGROW, config={"slice": "", "mode": served.settings.mode, "window": ""},
                         description="MediSee by segment name: name a segment with your question (or a structure), "
                                     "click on it if you like, press Update")

    def question(self, request: dict) -> StudyQuestion:
        label = request.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ClientError(UNPROCESSABLE, "name the segment with your question (the plugin sends it as 'label')")
        asked = {k: v for k, v in request.items() if k in ("slice", "mode", "window")}
        return parse_question(asked | {"query": label}, self.served.settings.max_query_chars, self.served.settings.mode)

    def placed(self, question: StudyQuestion, request: dict, image: MedicalImage) -> StudyQuestion:
        """The last foreground click ``[i, j, k]`` -> a point on its slice along the acquisition axis."""
        clicks = request.get("foreground") or []
        if image.ndim != 3 or not clicks:
            return question
        click = clicks[-1]
        if not (isinstance(click, list) and len(click) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in click)):
            raise ClientError(UNPROCESSABLE, f"a foreground click must be a voxel index [i, j, k], got {click!r}")
        axis = acquisition_axis(image)
        numpy_index = click[::-1]  # (k, j, i)
        if not all(0 <= n < size for n, size in zip(numpy_index, image.shape)):
            raise ClientError(UNPROCESSABLE, f"the click {click} is outside the image ({list(image.shape[::-1])} voxels)")
        normal = slice_axis(image, axis)
        row, column = (n for n in range(3) if n != normal)
        index = numpy_index[normal]
        return dataclasses.replace(question, axis=axis, slices=question.slices if question.slices is not None else index,
                                   point=(numpy_index[column] + 0.5, numpy_index[row] + 0.5), prompt_slice=index)

    def labelled(self, study: StudyAnswer, question: StudyQuestion) -> StudyAnswer:
        """One label (value 1) named by the segment: the union of the structures the answer names;
        per slice the best-scoring finding's box."""
        findings = [dict(e, label=1, phrase=question.query) for e in sorted(study.entities, key=lambda e: e["score"])]
        return dataclasses.replace(study, labels=(study.labels > 0).astype(np.uint8),
                                   label_names={1: question.query} if findings else {}, entities=findings)

"""``Predictor``: image + query (+ box or point) -> ``Prediction``.

Initialised once from a model, then called many times. The two image encoders (SAM and
CLIP) depend only on the pixels, so their outputs are cached per slice: a second question
about the same slice runs only the language model and the decoders. Slices of a volume
are processed in batches. Two modes:

- ``full``: greedy generation of the answer text; candidate tokens in the generated text
  are grounded (explanation + masks). With a drawn box or click the answer is given its
  opening ``Sure, <p>`` and the model names the marked structure next.
- ``fast``: mask-only; the answer prefix that carries the candidate tokens
  ("Sure, it is [SEG] and [BBOX].") is teacher-forced in one forward pass, no generation.

Each entity's ``score`` is the probability of the answer tokens that lead to its grounding
(``grounding_scores``): the same quantity in both modes, teacher-forced or generated; with
``presence_gate``, times the patch head's presence of the structure meant (``presence``). Below
``score_threshold`` (or with an empty mask) the entity is dropped, so "no target found" is
an empty entity list rather than a forced mask.
Coordinates: boxes are (x0, y0, x1, y1) in pixels with x along columns; points are (x, y).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .conversation import answer_prefix, parse_answer
from .metrics import mask_to_box
from .model import ImageEncoding, MediSee
from .model.box_head import cxcywh_to_xyxy

MAX_QUERY_CHARS = 2000
MODES = ("full", "fast")


class PredictionInputError(ValueError):
    """A request the predictor cannot answer (the message says why, for the user)."""


@dataclass
class Entity:
    phrase: str
    mask: np.ndarray  # bool (H, W), the slice's resolution
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float  # probability of the grounding token
    mask_quality: float  # the mask decoder's own IoU estimate
    router_weights: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Prediction:
    answer: str
    entities: list[Entity]
    slice_index: int | None = None
    raw_answer: str = ""


@dataclass
class PromptInputs:
    """Validated visual prompts in pixels, shared by every slice of a request."""

    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None

    def normalised(self, height: int, width: int) -> tuple[tuple[float, ...] | None, tuple[float, float] | None]:
        """Box and point as fractions of the slice's width and height (what the model reads)."""
        box = None if self.box is None else (self.box[0] / width, self.box[1] / height, self.box[2] / width, self.box[3] / height)
        point = None if self.point is None else (self.point[0] / width, self.point[1] / height)
        return box, point


class EmbeddingCache:
    """LRU cache of per-slice image encodings keyed by the slice's pixels."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, ImageEncoding] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(image: np.ndarray) -> str:
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
        digest.update(str((image.shape, image.dtype.str)).encode())
        return digest.hexdigest()

    def get(self, key: str) -> ImageEncoding | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return entry

    def put(self, key: str, value: ImageEncoding) -> None:
        if self.capacity <= 0:
            return
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


class Predictor:
    def __init__(
        self,
        model: MediSee,
        score_threshold: float | None = None,
        cache_size: int = 128,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.model.model.eval()
        self.score_threshold = model.config.score_threshold if score_threshold is None else score_threshold
        self.cache = EmbeddingCache(cache_size)
        self.batch_size = max(1, batch_size)
        self.max_new_tokens = max_new_tokens or model.config.max_new_tokens

    # -- public API -----------------------------------------------------------------------
    def predict(
        self,
        image: np.ndarray,
        query: str,
        box: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        mode: str = "full",
    ) -> Prediction:
        """One 2D uint8 image (H, W) or (H, W, 3)."""
        return self.predict_slices([image], query, box=box, point=point, mode=mode)[0]

    def predict_volume(
        self,
        volume: np.ndarray,
        query: str,
        slice_indices: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        mode: str = "full",
        progress=None,
    ) -> list[Prediction]:
        """Slices of a uint8 volume (Z, H, W) along its first axis; all slices by default.
        ``box``/``point`` are in-plane pixel coordinates applied to every slice asked for."""
        if volume.ndim != 3:
            raise PredictionInputError(f"expected a volume of shape (slices, height, width), got {volume.shape}")
        indices = list(range(volume.shape[0])) if slice_indices is None else list(slice_indices)
        for index in indices:
            if not 0 <= index < volume.shape[0]:
                raise PredictionInputError(
                    f"slice {index} out of range: the volume has {volume.shape[0]} slices (0..{volume.shape[0] - 1})"
                )
        predictions = self.predict_slices(
            [volume[i] for i in indices], query, box=box, point=point, mode=mode, progress=progress
        )
        for index, prediction in zip(indices, predictions):
            prediction.slice_index = index
        return predictions

    def predict_slices(
        self,
        images: Sequence[np.ndarray],
        query: str,
        box: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        mode: str = "full",
        progress=None,
    ) -> list[Prediction]:
        """Several 2D images with the same question, in batches of ``batch_size``.
        ``progress(done, total)`` is called after each batch."""
        query = validate_query(query)
        if mode not in MODES:
            raise PredictionInputError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
        images = [validate_image(image) for image in images]
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            prompts = [validate_prompts(image.shape[:2], box, point) for image in chunk]
            with torch.inference_mode():
                encoding = self._encode(chunk)
                run = self._run_full if mode == "full" else self._run_fast
                results.extend(run(encoding, query, prompts))
            if progress is not None:
                progress(min(start + len(chunk), len(images)), len(images))
        return results

    # -- steps ----------------------------------------------------------------------------
    def _encode(self, images: list[np.ndarray]) -> ImageEncoding:
        """Image encodings for a batch, computing only the slices not in the cache."""
        keys = [self.cache.key(image) for image in images]
        cached = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        todo = [k for k, v in cached.items() if v is None]
        if todo:
            first = {k: images[keys.index(k)] for k in todo}
            fresh = self.model.encode_images(list(first.values()))
            for i, k in enumerate(todo):
                cached[k] = fresh.select([i])
                self.cache.put(k, cached[k])
        return ImageEncoding.concat([cached[k] for k in keys])

    def _run_fast(self, encoding: ImageEncoding, query: str, prompts: list[PromptInputs]) -> list[Prediction]:
        bundle, model = self.model, self.model.model
        prefix = answer_prefix(bundle.config.candidate_tokens)
        tokens = bundle.tokenize([(query, prefix)] * len(prompts))
        embeds = model.embed_inputs(encoding.clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                                    tokens.answer_start, *self._referring(encoding, prompts), encoding.original,
                                    self._patch_probs(encoding))
        hidden = model.mllm.hidden_states(embeds, tokens.attention_mask)
        groups = model.find_groups(tokens.input_ids, tokens.answer_start)
        states = hidden[groups.rows.unsqueeze(1), groups.positions - 1]
        token_probs = self._teacher_forced_probabilities(hidden, tokens.input_ids)
        scores = grounding_scores(token_probs, groups.rows, groups.positions, tokens.answer_start)
        if self._checks_presence:  # it only lowers scores: rows already below the threshold skip it
            checked = sorted(set(groups.rows[scores >= self.score_threshold].tolist()))
            factors = scores.new_zeros(len(prompts))
            if checked:
                factors[checked] = self._meant_presence(encoding.select(checked), query, [prompts[r] for r in checked])
            scores = scores * factors[groups.rows]
        answers = [""] * len(prompts)
        return self._ground(encoding, groups.rows, states, scores, answers, [[] for _ in prompts], query, prompts)

    @property
    def _checks_presence(self) -> bool:
        return self.model.config.presence_gate and self.model.model.patch_head is not None

    def _meant_presence(self, encoding: ImageEncoding, query: str, prompts: list[PromptInputs]) -> torch.Tensor:
        """(B,): per row, the patch head's presence of the structure the model means, weighed
        by how likely it names each patch class after the absent answer's opening
        (``presence``); the question runs once, the K names as continuations of its cache."""
        from .data.templates import ABSENT_OPENING
        from .presence import expected_presence, structure_presence

        bundle, model = self.model, self.model.model
        tokens = bundle.tokenize([(query, None)] * len(prompts), padding_side="left")
        embeds = model.embed_inputs(encoding.clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                                    tokens.answer_start, *self._referring(encoding, prompts), encoding.original,
                                    self._patch_probs(encoding))
        names = [bundle.prompts.answer_ids(ABSENT_OPENING.format(name=name)) for name in bundle.config.patch_classes]
        name_log_probs = model.mllm.continuation_log_probs(embeds, tokens.attention_mask, names)
        return expected_presence(name_log_probs, structure_presence(model.patch_probabilities(encoding)))

    def _run_full(self, encoding: ImageEncoding, query: str, prompts: list[PromptInputs]) -> list[Prediction]:
        bundle, model = self.model, self.model.model
        openings = [self._opening(prompt) for prompt in prompts]
        tokens = bundle.tokenize([(query, None)] * len(prompts), padding_side="left", openings=openings)
        embeds = model.embed_inputs(encoding.clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                                    tokens.answer_start, *self._referring(encoding, prompts), encoding.original,
                                    self._patch_probs(encoding))
        eos = bundle.tokenizer.eos_token_id
        ids, step_states, probs = model.mllm.greedy_generate(embeds, tokens.attention_mask, self.max_new_tokens, eos)
        groups = model.find_groups(ids)
        # a generated token at step k was predicted by step k's state: no shift needed
        states = step_states[groups.rows.unsqueeze(1), groups.positions]
        # scores run over the generated tokens: a given opening is not the model's choice
        scores = grounding_scores(probs, groups.rows, groups.positions, torch.zeros_like(tokens.answer_start))
        raw, parsed = [], []
        for row in range(len(prompts)):
            row_ids = ids[row].tolist()
            row_ids = row_ids[: row_ids.index(eos)] if eos in row_ids else row_ids
            text = bundle.tokenizer.decode((openings[row] or []) + row_ids, skip_special_tokens=False)
            raw.append(text)
            parsed.append(parse_answer(text, bundle.config.candidate_tokens))
        answers, phrases = [p.text for p in parsed], [p.phrases for p in parsed]
        if self._checks_presence:
            scores = scores * self._named_presence(encoding, groups.rows, phrases, answers)
        return self._ground(encoding, groups.rows, states, scores, answers, phrases, query, prompts, raw)

    def _opening(self, prompt: PromptInputs) -> list[int] | None:
        """A drawn box or click asks about the structure it marks, so the answer is given the
        opening every named answer shares (``Sure, <p>``, as perspectives II and IV teach it)
        and the model writes the name next, where it learned to read it from the visual tags;
        without it a question worded like a reasoning one can get the unnamed ``Sure, it is
        [SEG]`` form. Models without the visual prompt encoder never learned the named form
        and answer freely."""
        if self.model.config.visual_prompts is None or (prompt.box is None and prompt.point is None):
            return None
        return self._prompted_opening

    @cached_property
    def _prompted_opening(self) -> list[int]:
        return named_opening(self.model)

    def _named_presence(self, encoding: ImageEncoding, rows: torch.Tensor, phrases: list[list[str]],
                        answers: list[str]) -> torch.Tensor:
        """(G,): per group, the patch head's presence of the structure its phrase names (for
        a row's first group without one, the answer's text; not the query, which may name a
        neighbour of the target)."""
        from .presence import phrase_presence, structure_presence

        presence = structure_presence(self.model.model.patch_probabilities(encoding))
        factors = [phrase_presence(phrases[row][k] if k < len(phrases[row]) else answers[row] if k == 0 else "",
                                   self.model.config.patch_classes, presence[row])
                   for row, k in zip(rows.tolist(), occurrences(rows.tolist()))]
        return torch.tensor(factors, dtype=torch.float32, device=presence.device)

    def _patch_probs(self, encoding: ImageEncoding) -> torch.Tensor | None:
        """The patch head's probabilities when the model reads visual tags."""
        model = self.model.model
        return model.patch_probabilities(encoding) if model.config.visual_tags else None

    def _referring(self, encoding: ImageEncoding, prompts: list[PromptInputs]) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' box and point normalised for the visual prompt encoder (NaN: none)."""
        boxes, points = zip(*(prompt.normalised(*size) for prompt, size in zip(prompts, encoding.original)))
        return self.model.referring_tensors(list(boxes), list(points))

    def _teacher_forced_probabilities(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T): probability the model gives each token of the sequence (0 at position 0)."""
        logits = self.model.model.mllm.logits(hidden[:, :-1]).float()
        probs = torch.softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1))[..., 0]
        return torch.cat([torch.zeros_like(probs[:, :1]), probs], dim=1)

    def _ground(
        self,
        encoding: ImageEncoding,
        rows: torch.Tensor,
        states: torch.Tensor,
        scores: torch.Tensor,
        answers: list[str],
        phrases: list[list[str]],
        query: str,
        prompts: list[PromptInputs],
        raw: list[str] | None = None,
    ) -> list[Prediction]:
        """Boxes and masks for every group whose score passes, then one Prediction per row."""
        model = self.model.model
        keep = (scores >= self.score_threshold).nonzero().flatten()
        rows, states, scores = rows[keep], states[keep], scores[keep]
        outputs = model.decode_candidate_states(states)
        prompt_boxes, prompt_points = self._prompt_tensors(encoding, rows, prompts, outputs.boxes)
        outputs = model.predict_masks(encoding, rows, outputs, prompt_boxes, prompt_points)
        predictions = [Prediction(answer=a, entities=[], raw_answer=(raw[i] if raw else "")) for i, a in enumerate(answers)]
        for g, (row, k) in enumerate(zip(rows.tolist(), occurrences(rows.tolist()))):
            mask = (outputs.mask_logits[g] > 0).cpu().numpy()
            if not mask.any():
                continue
            height, width = encoding.original[row]
            if self.model.config.box_source == "mask":
                x0, y0, x1, y1 = mask_to_box(mask)
            else:
                x0, y0, x1, y1 = (cxcywh_to_xyxy(outputs.boxes[g].float()).clamp(0, 1)
                                  * torch.tensor([width, height, width, height])).tolist()
            phrase = distinct_name(entity_phrase(k, phrases[row], answers[row], query),
                                   [e.phrase for e in predictions[row].entities])
            predictions[row].entities.append(
                Entity(
                    phrase=phrase,
                    mask=mask,
                    box=(x0, y0, x1, y1),
                    score=float(scores[g]),
                    mask_quality=float(outputs.mask_quality[g]),
                    router_weights={
                        "seg": outputs.router_seg_weights[g].float().tolist(),
                        "box": outputs.router_box_weights[g].float().tolist(),
                    },
                )
            )
        return predictions

    @staticmethod
    def _prompt_tensors(encoding, rows, prompts, like) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The user's box/point as mask-head prompts, normalised to the slice; NaN rows keep
        the prediction. A prompt marks one structure: in a row that grounds several, only the
        group it belongs to gets it (``owner_of_prompt``)."""
        if len(rows) == 0:
            return None, None
        chosen = [prompts[r] for r in rows.tolist()]
        if any(p.box is not None for p in chosen) and not all(p.box is not None for p in chosen):
            raise PredictionInputError("a box must be given for every slice or for none")
        owners = owner_of_prompt(rows, cxcywh_to_xyxy(like.float()), prompts, encoding.original)
        nan = float("nan")
        boxes = points = None
        if any(p.box is not None for p in chosen):
            boxes = [[nan] * 4] * len(chosen)
        if any(p.point is not None for p in chosen):
            points = [[[nan, nan]]] * len(chosen)
        for g, row in owners.items():
            box, point = prompts[row].normalised(*encoding.original[row])
            if box is not None:
                boxes[g] = list(box)
            if point is not None:
                points[g] = [list(point)]
        as_tensor = lambda v: None if v is None else torch.tensor(v, dtype=like.dtype, device=like.device)  # noqa: E731
        return as_tensor(boxes), as_tensor(points)


def named_opening(bundle: MediSee) -> list[int]:
    """The token ids every named answer (``Sure, <p>name</p> ...``) starts with, over every
    structure the model may name (with one name the shared prefix would be a whole answer)."""
    from .data.knowledge import load_knowledge
    from .data.templates import named_answer

    names = dict.fromkeys([*bundle.config.patch_classes, *load_knowledge()])
    return bundle.prompts.shared_opening([named_answer(name, "", bundle.config.candidate_tokens) for name in names])


def occurrences(rows: list[int]) -> list[int]:
    """For each group, how many groups of its row came before it (its k in ``entity_phrase``)."""
    seen: dict[int, int] = {}
    out = []
    for row in rows:
        out.append(seen.get(row, 0))
        seen[row] = out[-1] + 1
    return out


def entity_phrase(k: int, phrases: list[str], answer: str, query: str) -> str:
    """The name of a row's k-th grounded entity: its ``<p>phrase</p>``; else, for the first,
    the structure the answer text names; else the query itself (fast mode has no text, and
    a query may name a neighbour rather than the target), numbered after the first so that
    two unnamed entities keep two labels."""
    from .data.knowledge import structure_named_in

    if k < len(phrases) and phrases[k]:
        return phrases[k]
    if k == 0:
        named = structure_named_in(answer)
        return named.name if named is not None else query[:64]
    return f"{query[:56]} #{k + 1}"


def distinct_name(name: str, taken: list[str]) -> str:
    """``name``, numbered when an earlier entity of the answer has it: a model that names
    one structure in two groups still gives two masks, and the label map, the server's
    ``label_names`` and the Slicer segments need one name per entity (else one is lost)."""
    if name not in taken:
        return name
    number = 2
    while f"{name} #{number}" in taken:
        number += 1
    return f"{name} #{number}"


def owner_of_prompt(rows: torch.Tensor, predicted_xyxy: torch.Tensor, prompts: list[PromptInputs],
                    sizes: list[tuple[int, int]]) -> dict[int, int]:
    """group index -> row for the one group of each prompted row that the prompt marks: the
    only group, else the one whose predicted box overlaps the user's box most (or whose
    centre is nearest the clicked point). ``predicted_xyxy`` (G, 4) is normalised."""
    from .metrics import box_iou

    by_row: dict[int, list[int]] = {}
    for g, row in enumerate(rows.tolist()):
        if prompts[row].box is not None or prompts[row].point is not None:
            by_row.setdefault(row, []).append(g)
    owners = {}
    for row, groups in by_row.items():
        box, point = prompts[row].normalised(*sizes[row])

        def closeness(g: int) -> float:
            x0, y0, x1, y1 = predicted_xyxy[g].tolist()
            if box is not None:
                return box_iou((x0, y0, x1, y1), box)
            return -((point[0] - (x0 + x1) / 2) ** 2 + (point[1] - (y0 + y1) / 2) ** 2)

        owners[max(groups, key=closeness)] = row
    return owners


def grounding_scores(token_probs: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor,
                     answer_start: torch.Tensor) -> torch.Tensor:
    """Each group's score: the probability of the answer tokens from the end of the row's
    previous group (or the answer's start) up to and including the group's first candidate
    token, i.e. how sure the model is that it should ground one more target here."""
    scores = []
    previous_end: dict[int, int] = {}
    for row, group in zip(rows.tolist(), positions.tolist()):
        start = previous_end.get(row, int(answer_start[row]))
        scores.append(token_probs[row, start : group[0] + 1].prod())
        previous_end[row] = max(group) + 1
    return torch.stack(scores) if scores else token_probs.new_zeros(0)


# -- validation ------------------------------------------------------------------------
def validate_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise PredictionInputError("the query is empty: type a question about the image")
    query = query.strip()
    if len(query) > MAX_QUERY_CHARS:
        raise PredictionInputError(f"the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    return query


def validate_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise PredictionInputError(
            f"expected a 2D image (height, width) or (height, width, 3), got shape {tuple(image.shape)}"
        )
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise PredictionInputError(f"the image is too small: {image.shape[1]}x{image.shape[0]} pixels")
    if image.dtype != np.uint8:
        raise PredictionInputError(f"expected a uint8 (windowed) image, got {image.dtype}; window it first")
    return image


def validate_prompts(shape: tuple[int, int], box: Sequence[float] | None, point: Sequence[float] | None) -> PromptInputs:
    """Check box/point against an image of ``shape`` (height, width)."""
    height, width = shape
    checked = PromptInputs()
    if box is not None:
        if len(box) != 4:
            raise PredictionInputError(f"a box needs 4 numbers x0,y0,x1,y1; got {len(box)}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x0 < x1 and y0 < y1):
            raise PredictionInputError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is empty: need x0 < x1 and y0 < y1")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise PredictionInputError(
                f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the image ({width}x{height} pixels)"
            )
        checked.box = (x0, y0, x1, y1)
    if point is not None:
        if len(point) != 2:
            raise PredictionInputError(f"a point needs 2 numbers x,y; got {len(point)}")
        x, y = (float(v) for v in point)
        if not (0 <= x < width and 0 <= y < height):
            raise PredictionInputError(f"point {x:g},{y:g} lies outside the image ({width}x{height} pixels)")
        checked.point = (x, y)
    return checked

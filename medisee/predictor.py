"""``Predictor``: image + query (+ box or point) -> ``Prediction``.

Initialised once from a model, then called many times. The two image encoders (SAM and
CLIP) depend only on the pixels, so their outputs are cached per slice: a second question
about the same slice runs only the language model and the decoders. Slices of a volume
are processed in batches. Two modes:

- ``full``: greedy generation of the answer text; candidate tokens in the generated text
  are grounded (explanation + masks). With a drawn box or click the answer is given its
  opening ``Sure, <p>`` and the model names the marked structure next.
- ``fast``: mask-only; the answer prefix that carries the candidate tokens (the config's
  ``fast_answer``: "Sure, it is [SEG] and [BBOX]." for ours, "[SEG] and [BBOX]." as the
  reference forces it) is teacher-forced in one forward pass, no generation.

Each entity's ``score`` is the probability of the answer tokens that lead to its grounding
(``grounding_scores``): the same quantity in both modes, teacher-forced or generated; with
``presence_gate``, times the patch head's presence of the structure meant (``presence``). Below
``score_threshold`` (or with an empty mask) the entity is dropped, so "no target found" is
an empty entity list rather than a forced mask.
Coordinates: boxes are (x0, y0, x1, y1) in pixels with x along columns; points are (x, y).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .boxes import cxcywh_to_xyxy
from .conversation import answer_prefix, parse_answer, refuses_repeated_word
from .data.knowledge import asks_for_both_sides, find_structure, load_knowledge, paired_structures, structure_named_in
from .data.templates import ABSENT_OPENING, absent_answer, grouped_answer, named_answer
from .metrics import box_iou, mask_to_box
from .model import ImageEncoding, MediSee
from .presence import expected_presence, phrase_presence, structure_presence

MAX_QUERY_CHARS = 2000
ASKED = 0.5  # query-head probability above which a query asks for a structure
# how loudly the query head's "is this structure asked for?" weighs a group (an exponent):
# in full when the group's <p>phrase</p> names the structure (the model named what the head
# chose); as a square root when only a full answer's text names it (on people's questions,
# 1 lost implicit MR answers the head was unsure of, 0 let "thyroid" on a brain slice
# through as white matter: "nothing" 82.7 -> 87.5, MR 61.4 -> 61.3; on the generator's
# phrasings, full mode, brain 96.7 -> 87.9); not at all for an unnamed fast-mode group (the
# square root there cost the generator's MR phrasings 3.9 gIoU, white matter Dice 3.0)
NAMED_IN_GROUP, NAMED_IN_TEXT, UNNAMED = 1.0, 0.5, 0.0
PAIR_HINT = 0.2  # query-head probability of either side above which "both kidneys" asks for both
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
    # the group's candidate states (n, H): a volume answer segments the structure on other slices with them
    state: torch.Tensor | None = field(default=None, repr=False, compare=False)


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

    def encode(self, images: Sequence[np.ndarray]) -> ImageEncoding:
        """Both image encodings of 2D images, in batches (cached: a later ``predict_slices``
        on the same pixels reuses them)."""
        images = [validate_image(image) for image in images]
        with torch.inference_mode():
            parts = [self._encode(images[start : start + self.batch_size])
                     for start in range(0, len(images), self.batch_size)]
        return ImageEncoding.concat(parts)

    def presence(self, encoding: ImageEncoding) -> torch.Tensor | None:
        """(B, K) per slice, the patch head's presence of each patch class (``None`` without
        a patch head or with the presence gate off)."""
        model = self.model.model
        if not self.model.config.presence_gate or model.patch_head is None:
            return None
        with torch.inference_mode():
            return structure_presence(model.patch_probabilities(encoding)).float()

    def segment_with_states(self, encoding: ImageEncoding, states: torch.Tensor) -> list[tuple[np.ndarray, float]]:
        """Per row of ``encoding``, the mask (and the decoder's quality estimate) of the group
        whose candidate states are ``states[row]`` (found on another slice of the volume):
        the mask decoder reads this slice's encoding with those states and the box they predict."""
        if len(states) == 0:
            return []
        model = self.model.model
        with torch.inference_mode():
            outputs = model.decode_candidate_states(states)
            outputs = model.predict_masks(encoding, torch.arange(len(states), device=states.device), outputs)
        return [((outputs.mask_logits[g] > 0).cpu().numpy(), float(outputs.mask_quality[g])) for g in range(len(states))]

    # -- steps ----------------------------------------------------------------------------
    def _encode(self, images: list[np.ndarray]) -> ImageEncoding:
        """Image encodings for a batch, computing only the slices not in the cache."""
        keys = [self.cache.key(image) for image in images]
        cached = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        todo = [k for k, v in cached.items() if v is None]
        if todo:
            first = {k: images[keys.index(k)] for k in todo}
            fresh = self.model.encode_images(list(first.values()))
            self.model.model.keep_patch_probabilities(fresh)
            for i, k in enumerate(todo):
                cached[k] = fresh.select([i])
                self.cache.put(k, cached[k])
        return ImageEncoding.concat([cached[k] for k in keys])

    def _run_fast(self, encoding: ImageEncoding, query: str, prompts: list[PromptInputs],
                  forms: list[str] | None = None) -> list[Prediction]:
        """Teacher-forced answers: the one-entity opening or, for the structures the query
        head is sure the query asks for, one named group each, whichever form the model
        finds likelier per row (for several structures, by the opening alone: "Sure, <p>"
        against "Sure, it is [SEG]"). ``forms`` receives the answer each row was given."""
        candidates = self.model.config.candidate_tokens
        forced = [answer_prefix(candidates, self.model.config.fast_answer)] * len(prompts)
        rows, states, scores = self._teacher_force(encoding, query, prompts, forced)
        named = self.asked(query)
        asked = [row for row, p in enumerate(prompts) if named and p.box is None and p.point is None]
        if asked:
            answer, several = grouped_answer(named, candidates), len(named) > 1
            n_rows, n_states, n_scores = self._teacher_force(encoding, query, prompts, [answer] * len(prompts),
                                                             given_names=several)
            first, n_first = _first_scores(rows, scores, len(prompts)), _first_scores(n_rows, n_scores, len(prompts))
            chosen = [row for row in asked if n_first[row] > first[row]]
            for row in chosen:
                forced[row] = answer
            keep, take = ~_rows_in(rows, chosen), _rows_in(n_rows, chosen)
            rows, states, scores = (torch.cat([a[keep], b[take]]) for a, b in
                                    ((rows, n_rows), (states, n_states), (scores, n_scores)))
            order = torch.sort(rows, stable=True).indices
            rows, states, scores = rows[order], states[order], scores[order]
        if forms is not None:
            forms.extend(forced)
        phrases = [parse_answer(answer, candidates).phrases for answer in forced]
        if self._gates:  # named groups: their structure's gate; the others: the structure the model means
            factors = self._named_presence(encoding, rows, phrases, [""] * len(prompts), query, prompts)
            # the meant structure costs a second pass: rows already below the threshold skip it
            unnamed = sorted({row for row in rows[scores >= self.score_threshold].tolist() if not any(phrases[row])})
            if unnamed:
                meant = scores.new_zeros(len(prompts))
                meant[unnamed], names = self._meant_presence(encoding.select(unnamed), query, [prompts[r] for r in unnamed])
                factors = torch.where(_rows_in(rows, unnamed), meant[rows], factors.to(meant))
                for row, name in zip(unnamed, names):  # the entity is named for it, not for the query
                    phrases[row] = [name]
            scores = scores * factors
        return self._ground(encoding, rows, states, scores, [""] * len(prompts), phrases, query, prompts)

    def _teacher_force(self, encoding: ImageEncoding, query: str, prompts: list[PromptInputs], answers: list[str],
                       given_names: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over the rows with their ``answers`` given: each group's row, the state
        before its candidate tokens and its score. ``given_names``: the query head chose the
        groups, so each is scored by the answer's opening alone ("Sure, <p>": is anything
        asked for there at all); the gates then weigh each structure."""
        bundle, model = self.model, self.model.model
        tokens = bundle.tokenize([(query, answer) for answer in answers])
        embeds = self._embed(encoding, tokens, query, prompts)
        hidden = model.mllm.hidden_states(embeds, tokens.attention_mask)
        groups = model.find_groups(tokens.input_ids, tokens.answer_start)
        states = hidden[groups.rows.unsqueeze(1), groups.positions - 1]
        token_probs = self._teacher_forced_probabilities(hidden, tokens.input_ids)
        if given_names:
            opened = [token_probs[row, start : start + len(self._prompted_opening)].prod()
                      for row, start in enumerate(tokens.answer_start.tolist())]
            return groups.rows, states, torch.stack(opened)[groups.rows]
        return groups.rows, states, grounding_scores(token_probs, groups.rows, groups.positions, tokens.answer_start)

    def _answer_several(self, predictions: list[Prediction], query: str) -> list[Prediction]:
        """A request for several structures, answered in named groups as fast mode answers it
        (each checked on its own): the answer names the groups that pass. Why: the tiny
        language model left out or repeated structures of such requests (29% of people's
        several-structure requests answered in full), while each group's gates still say
        whether that structure is there."""
        candidates = self.model.config.candidate_tokens
        for prediction in predictions:
            found = [e.phrase for e in prediction.entities]
            raw = (grouped_answer(found, candidates) if found
                   else absent_answer(" and ".join(self.asked(query)), "None of them is found on this slice."))
            prediction.raw_answer, prediction.answer = raw, parse_answer(raw, candidates).text
        return predictions

    def asked(self, query: str) -> list[str]:
        """The structures the query head says the query asks for (none without query tags),
        in the order the query names them (as the answers the model learned list them);
        those it does not name by a known term last."""
        asked = [name for name, p in self.asked_probabilities(query).items() if p >= ASKED]
        return sorted(asked, key=lambda name: mention_position(query, name))

    def asked_probabilities(self, query: str) -> dict[str, float]:
        """The query head's probability that ``query`` asks for each structure, both sides of
        a paired structure raised to the surer side's when the words ask for both ("the
        lungs", "both kidneys") and the head leans to either (``PAIR_HINT``): one sentence
        embedding blurs "lung" and "lungs", the plural does not."""
        probabilities = dict(self.model.asked_structures(query))
        for noun, sides in paired_structures().items():
            surer = max(probabilities.get(side, 0.0) for side in sides)
            if surer >= PAIR_HINT and asks_for_both_sides(query, noun):
                probabilities.update({side: max(surer, ASKED) for side in sides if side in probabilities})
        return probabilities

    @property
    def _gates(self) -> bool:
        config = self.model.config
        return (config.presence_gate and self.model.model.patch_head is not None) or config.query_gate

    def _gate_values(self, encoding: ImageEncoding, query: str, prompts: list[PromptInputs],
                     query_weights: Sequence[float] = (NAMED_IN_GROUP,)) -> list[torch.Tensor]:
        """Per weight in ``query_weights``, (B, K): per row and patch class, the factor a group
        meaning that class gets: the patch head's presence of the class on the slice
        (``presence_gate``) times how surely the question asks for it (``query_gate``), raised
        to the weight (``NAMED_IN_GROUP``, ``NAMED_IN_TEXT`` or ``UNNAMED``, which leaves the
        question out); presence and the question are computed once for all weights. Rows with
        a drawn box or click ask about what it marks, not by name, and are not checked against
        the question."""
        model, config = self.model.model, self.model.config
        values = torch.ones(len(prompts), len(config.patch_classes), device=encoding.sam.device)
        if config.presence_gate and model.patch_head is not None:
            values = values * structure_presence(model.patch_probabilities(encoding)).float()
        if not config.query_gate or not any(weight > 0 for weight in query_weights):
            return [values] * len(query_weights)
        asked = torch.tensor(list(self.asked_probabilities(query).values()), device=values.device)
        named_only = torch.tensor([p.box is None and p.point is None for p in prompts], device=values.device)
        return [torch.where(named_only.unsqueeze(1), values * asked ** weight, values) for weight in query_weights]

    def _meant_presence(self, encoding: ImageEncoding, query: str,
                        prompts: list[PromptInputs]) -> tuple[torch.Tensor, list[str]]:
        """(B,): per row, the gate of the structure the model means (``_gate_values`` of an
        unnamed group), weighed by how likely it names each patch class after the absent
        answer's opening (``presence``); and that structure's name (the likeliest name times
        its presence). The question runs once, the K names as continuations of its cache."""
        bundle, model = self.model, self.model.model
        tokens = bundle.tokenize([(query, None)] * len(prompts), padding_side="left")
        embeds = self._embed(encoding, tokens, query, prompts)
        names = [bundle.prompts.answer_ids(ABSENT_OPENING.format(name=name)) for name in bundle.config.patch_classes]
        name_log_probs = model.mllm.continuation_log_probs(embeds, tokens.attention_mask, names)
        gates = self._gate_values(encoding, query, prompts, (UNNAMED,))[0]
        meant = (torch.softmax(name_log_probs.float(), dim=-1) * gates.float()).argmax(dim=-1)
        return expected_presence(name_log_probs, gates), [bundle.config.patch_classes[i] for i in meant.tolist()]

    def _run_full(self, encoding: ImageEncoding, query: str, prompts: list[PromptInputs]) -> list[Prediction]:
        bundle, model = self.model, self.model.model
        if len(self.asked(query)) > 1 and all(p.box is None and p.point is None for p in prompts):
            forms: list[str] = []
            predictions = self._run_fast(encoding, query, prompts, forms)
            if all(form != answer_prefix(bundle.config.candidate_tokens, bundle.config.fast_answer) for form in forms):
                return self._answer_several(predictions, query)
        openings = [self._opening(prompt) for prompt in prompts]
        tokens = bundle.tokenize([(query, None)] * len(prompts), padding_side="left", openings=openings)
        embeds = self._embed(encoding, tokens, query, prompts)
        eos = bundle.tokenizer.eos_token_id
        ids, step_states, probs = model.mllm.greedy_generate(embeds, tokens.attention_mask, self.max_new_tokens, eos,
                                                             refuse=self._refuse)
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
        if self._gates:
            scores = scores * self._named_presence(encoding, groups.rows, phrases, answers, query, prompts)
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
    def _refuse(self) -> Callable[[list[int], int], bool]:
        return refuses_repeated_word(self.model.tokenizer)

    @cached_property
    def _prompted_opening(self) -> list[int]:
        return named_opening(self.model)

    def _named_presence(self, encoding: ImageEncoding, rows: torch.Tensor, phrases: list[list[str]],
                        answers: list[str], query: str, prompts: list[PromptInputs]) -> torch.Tensor:
        """(G,): per group, the gate (``_gate_values``) of the structure its phrase names (for
        a row's first group without one, the structure the answer's text names, with the
        query head's word softened; never the query, which may name a neighbour of the
        target); 1 for a structure outside the patch classes."""
        classes = self.model.config.patch_classes
        by_phrase, by_text = self._gate_values(encoding, query, prompts, (NAMED_IN_GROUP, NAMED_IN_TEXT))
        factors = []
        for row, k in zip(rows.tolist(), occurrences(rows.tolist())):
            if k < len(phrases[row]) and phrases[row][k]:
                factors.append(phrase_presence(phrases[row][k], classes, by_phrase[row]))
            else:
                factors.append(phrase_presence(answers[row] if k == 0 else "", classes, by_text[row]))
        return torch.tensor(factors, dtype=torch.float32, device=by_phrase.device)

    def _embed(self, encoding: ImageEncoding, tokens, query: str, prompts: list[PromptInputs]) -> torch.Tensor:
        """The language model's input for a batch of rows asking ``query``: tokens, image
        slot, visual prompts and tags."""
        bundle = self.model
        return bundle.model.embed_inputs(encoding.clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                                         tokens.answer_start, *self._referring(encoding, prompts), encoding.original,
                                         self._patch_probs(encoding), bundle.query_embeddings([query] * len(prompts)))

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
            entity = Entity(
                phrase=entity_phrase(k, phrases[row], answers[row], query),
                mask=mask,
                box=(x0, y0, x1, y1),
                score=float(scores[g]),
                mask_quality=float(outputs.mask_quality[g]),
                router_weights={
                    "seg": outputs.router_seg_weights[g].float().tolist(),
                    "box": outputs.router_box_weights[g].float().tolist(),
                },
                state=states[g],
            )
            add_entity(predictions[row].entities, entity, self.model.config.box_source == "mask")
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
    names = dict.fromkeys([*bundle.config.patch_classes, *load_knowledge()])
    return bundle.prompts.shared_opening([named_answer(name, "", bundle.config.candidate_tokens) for name in names])


def mention_position(text: str, name: str) -> int:
    """Where ``text`` first names the catalogue structure ``name`` (by its name, a synonym or
    an informal name, any case); past the end when it does not."""
    structure = find_structure(name)
    terms = (*structure.terms, *structure.informal) if structure is not None else (name,)
    found = [m.start() for term in terms for m in [re.search(rf"\b{re.escape(term)}\b", text, re.IGNORECASE)] if m]
    return min(found, default=len(text) + 1)


def _first_scores(rows: torch.Tensor, scores: torch.Tensor, count: int) -> list[float]:
    """Each of ``count`` rows' first group's score (0 for a row without a group)."""
    first = [0.0] * count
    for row, score in reversed(list(zip(rows.tolist(), scores.tolist()))):
        first[row] = score
    return first


def _rows_in(rows: torch.Tensor, chosen: list[int]) -> torch.Tensor:
    """(G,) whether each group's row is one of ``chosen``."""
    return torch.isin(rows, torch.tensor(chosen, dtype=rows.dtype, device=rows.device))


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
    if k < len(phrases) and phrases[k]:
        return phrases[k]
    if k == 0:
        named = structure_named_in(answer)
        return named.name if named is not None else query[:64]
    return f"{query[:56]} #{k + 1}"


def add_entity(entities: list[Entity], entity: Entity, box_from_mask: bool) -> None:
    """Append ``entity`` to a row's ``entities``: a catalogue structure the answer names a
    second time joins its first entity (one structure, one mask and one segment: the
    answer's text names it once too); any other repeated name is numbered (``distinct_name``)."""
    first = next((e for e in entities if e.phrase == entity.phrase), None)
    if first is None or find_structure(entity.phrase) is None:
        entity.phrase = distinct_name(entity.phrase, [e.phrase for e in entities])
        entities.append(entity)
        return
    first.mask = first.mask | entity.mask
    first.box = (mask_to_box(first.mask) if box_from_mask else
                 (min(first.box[0], entity.box[0]), min(first.box[1], entity.box[1]),
                  max(first.box[2], entity.box[2]), max(first.box[3], entity.box[3])))
    if entity.score > first.score:
        first.score, first.mask_quality, first.router_weights = entity.score, entity.mask_quality, entity.router_weights


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

"""Multi-entity (MIMO) evaluation metrics: mask mIoU and AP50, grounding F1, answer text.

These follow MIMO's held-in evaluation (``../shared/seeds/002_...``, section 4 and
appendix D.1) and plug into the evaluation next to :mod:`medisee.metrics`: every
accumulator has ``add(...)``, ``count`` and a flat ``summary() -> dict`` (``None`` for a
metric that has seen nothing), and :class:`ByPerspective` splits any of them per
MIMOSeg perspective (I-IV, as ``Record.extra["perspective"]`` in :mod:`medisee.data.mimo`).

Conventions (each chosen so an empty or degenerate case has a defined value, never a
division by zero):

- Masks compare as booleans with :func:`medisee.metrics.mask_iou` (1.0 when both are
  empty, 0.0 when one is).
- **mIoU**: per image, predictions are matched one-to-one to ground-truth entities by the
  Hungarian algorithm, maximising total IoU; mIoU is the mean over *ground-truth* entities
  of their matched IoU, an unmatched ground truth (fewer predictions than targets) counting
  0. Extra predictions do not lower it (AP50 and F1 see them); leaving a hard entity out does.
- **AP50**: predictions of all images ranked by score (descending, ties in the order they
  were added, as COCO's stable sort); in that order each takes the unmatched ground truth
  of its own image with the highest IoU and is a true positive when that IoU >= 0.5. AP is
  the COCO 101-point interpolated area (mean over recall 0, 0.01, ..., 1 of the highest
  precision at that recall or above); ``method="all"`` gives the all-point (VOC 2010+)
  area instead. No ground truth at all: ``nan``; ground truth but no prediction: 0.
- **Grounding F1** (appendix D.1): a predicted entity is correct when its phrase matches a
  ground-truth phrase (:func:`phrases_match`) and the mask IoU is > 0.5 (strictly); pairs
  are one-to-one (maximum matching). Precision = correct / predicted, recall = correct /
  ground truth, F1 = harmonic mean, all micro-averaged (totals over the data set). When
  nothing was predicted and nothing expected, all three are 1.0; any other zero
  denominator gives 0.0.
- **Phrases** (:func:`normalise_phrase`): lower case; ``_``/``-`` and punctuation become
  spaces; the articles "a", "an", "the" are dropped; whitespace collapses. Then a phrase
  the knowledge base knows (name or synonym, via
  :func:`medisee.data.knowledge.find_structure`; "X, Y" is also tried as "Y X", so
  "kidney, left" finds "left kidney") becomes that structure's name. Two phrases match
  when the results are equal.
- **Text**: :func:`tokenize` lower-cases and keeps runs of letters and digits (the
  rouge-score default; nltk's ``word_tokenize`` would need the downloaded punkt model).
  BLEU-4 is nltk's ``corpus_bleu`` (uniform 1-4-gram weights, one reference per answer)
  with smoothing ``method1`` (epsilon 0.1 added to an n-gram order with no match, so one
  short answer does not zero the corpus). ROUGE-L is rouge-score's LCS F-measure
  (beta 1), averaged over answers. METEOR is nltk's ``meteor_score`` with exact and Porter
  stem matching only: WordNet cannot be downloaded here, so a stand-in whose ``synsets()``
  is empty is passed, i.e. this is METEOR *without synonym matching*; identical answers
  score just below 1 (the fragmentation penalty 0.5 (1/m)^3). For ROUGE-L and METEOR an
  answer and reference that are both empty (no tokens) score 1.0, one empty scores 0.0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from .data.knowledge import find_structure
from .metrics import _json_number, _mean, mask_iou

AP_IOU_THRESHOLD = 0.5  # AP50: a true positive needs IoU >= 0.5
F1_IOU_THRESHOLD = 0.5  # grounding F1: a correct entity needs IoU > 0.5 (strictly, appendix D.1)
ARTICLES = frozenset({"a", "an", "the"})
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Entity:
    """One grounded entity: its phrase, its mask and (for predictions) a confidence used to
    rank it for AP50."""

    phrase: str
    mask: np.ndarray
    score: float = 1.0


# --------------------------------------------------------------------------- masks


def iou_matrix(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray]) -> np.ndarray:
    """IoU of every prediction (rows) with every ground truth (columns)."""
    out = np.zeros((len(pred_masks), len(gt_masks)), dtype=float)
    for i, pred in enumerate(pred_masks):
        for j, gt in enumerate(gt_masks):
            out[i, j] = mask_iou(pred, gt)
    return out


def match_ious(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray]) -> list[float]:
    """For each ground truth, the IoU of the prediction it is matched to (one-to-one,
    maximal total IoU), 0.0 if none is left for it. This is what mIoU averages."""
    if not gt_masks:
        return []
    if not pred_masks:
        return [0.0] * len(gt_masks)
    ious = iou_matrix(pred_masks, gt_masks)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    matched = [0.0] * len(gt_masks)
    for r, c in zip(rows, cols):
        matched[c] = float(ious[r, c])
    return matched


def average_precision(scores: Sequence[float], true_positive: Sequence[bool], n_gt: int,
                      method: str = "coco101") -> float:
    """Area under the interpolated precision-recall curve of ranked detections.

    ``method="coco101"``: mean of the interpolated precision at recall 0, 0.01, ..., 1;
    ``"all"``: the exact area of the interpolated (monotone) curve. ``nan`` if
    ``n_gt == 0``; 0.0 with no detections."""
    if method not in ("coco101", "all"):
        raise ValueError(f"method must be 'coco101' or 'all', got {method!r}")
    if len(scores) != len(true_positive):
        raise ValueError("scores and true_positive differ in length")
    if n_gt <= 0:
        return math.nan
    if not scores:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    tp = np.asarray(true_positive, dtype=float)[order]
    tp_cum, fp_cum = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = tp_cum / n_gt
    precision = tp_cum / (tp_cum + fp_cum)
    # interpolate: precision at recall r = the best precision at any recall >= r
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if method == "all":
        r = np.concatenate([[0.0], recall])
        return float(np.sum((r[1:] - r[:-1]) * envelope))
    thresholds = np.linspace(0.0, 1.0, 101)
    idx = np.searchsorted(recall, thresholds, side="left")
    values = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(np.mean(values))


class MaskEntityAccumulator:
    """mIoU and AP50 over multi-entity mask predictions, image by image."""

    def __init__(self, iou_threshold: float = AP_IOU_THRESHOLD, ap_method: str = "coco101") -> None:
        self.iou_threshold = iou_threshold
        self.ap_method = ap_method
        self.matched_ious: list[float] = []  # one per ground-truth entity
        self.scores: list[float] = []
        self.true_positive: list[bool] = []
        self.n_gt = 0
        self.images = 0

    @property
    def count(self) -> int:
        """Images added."""
        return self.images

    def add(self, preds: Sequence[Entity], gts: Sequence[Entity]) -> dict[str, Any]:
        """Record one image; returns its per-ground-truth matched IoUs and per-prediction
        true-positive flags (in the order given)."""
        pred_masks = [e.mask for e in preds]
        gt_masks = [e.mask for e in gts]
        matched = match_ious(pred_masks, gt_masks)
        ious = iou_matrix(pred_masks, gt_masks)
        taken = np.zeros(len(gts), dtype=bool)
        flags = [False] * len(preds)
        for i in np.argsort(-np.asarray([e.score for e in preds], dtype=float), kind="mergesort"):
            if not len(gts):
                break
            candidates = np.where(taken, -1.0, ious[i])
            j = int(np.argmax(candidates))
            if candidates[j] >= self.iou_threshold:
                taken[j] = True
                flags[i] = True
        self.matched_ious.extend(matched)
        self.scores.extend(float(e.score) for e in preds)
        self.true_positive.extend(flags)
        self.n_gt += len(gts)
        self.images += 1
        return {"matched_ious": matched, "true_positive": flags}

    def miou(self) -> float:
        """Mean matched IoU over ground-truth entities (unmatched count 0)."""
        return _mean(self.matched_ious)

    def ap50(self) -> float:
        return average_precision(self.scores, self.true_positive, self.n_gt, self.ap_method)

    def summary(self) -> dict[str, float | int | None]:
        return {"miou": _json_number(self.miou()), "ap50": _json_number(self.ap50()),
                "gt_entities": self.n_gt, "pred_entities": len(self.scores), "images": self.images}


# --------------------------------------------------------------------------- phrases


def _basic_normalise(phrase: str) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", phrase.lower()).split()
    return " ".join(w for w in words if w not in ARTICLES)


@lru_cache(maxsize=4096)
def normalise_phrase(phrase: str) -> str:
    """The comparable form of an entity phrase: case, punctuation, articles and
    whitespace removed, then a known structure's synonym replaced by its name."""
    basic = _basic_normalise(phrase)
    candidates = [basic]
    if "," in phrase:  # "kidney, left" -> "left kidney"
        head, _, tail = phrase.partition(",")
        candidates.append(_basic_normalise(f"{tail} {head}"))
    for candidate in candidates:
        if candidate and (structure := find_structure(candidate)) is not None:
            return _basic_normalise(structure.name)
    return basic


def phrases_match(predicted: str, ground_truth: str) -> bool:
    """True when the two phrases name the same entity after :func:`normalise_phrase`;
    an empty phrase matches nothing."""
    a, b = normalise_phrase(predicted), normalise_phrase(ground_truth)
    return bool(a) and a == b


# --------------------------------------------------------------------------- grounding F1


def count_correct(preds: Sequence[Entity], gts: Sequence[Entity],
                  iou_threshold: float = F1_IOU_THRESHOLD) -> int:
    """Correct prediction pairs of one image: the size of a maximum one-to-one matching
    among pairs whose phrases match and whose mask IoU > ``iou_threshold``."""
    if not preds or not gts:
        return 0
    ious = iou_matrix([e.mask for e in preds], [e.mask for e in gts])
    ok = np.array([[phrases_match(p.phrase, g.phrase) for g in gts] for p in preds]) & (ious > iou_threshold)
    if not ok.any():
        return 0
    rows, cols = linear_sum_assignment(ok.astype(float), maximize=True)
    return int(ok[rows, cols].sum())


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


class GroundingF1Accumulator:
    """MIMO's grounding F1 (appendix D.1), micro-averaged over images."""

    def __init__(self, iou_threshold: float = F1_IOU_THRESHOLD) -> None:
        self.iou_threshold = iou_threshold
        self.n_pred = 0
        self.n_gt = 0
        self.n_correct = 0
        self.images = 0

    @property
    def count(self) -> int:
        return self.images

    def add(self, preds: Sequence[Entity], gts: Sequence[Entity]) -> int:
        """Record one image; returns its number of correct entities."""
        correct = count_correct(preds, gts, self.iou_threshold)
        self.n_pred += len(preds)
        self.n_gt += len(gts)
        self.n_correct += correct
        self.images += 1
        return correct

    def precision(self) -> float:
        if not self.images:
            return math.nan
        return _ratio(self.n_correct, self.n_pred, self.n_pred == self.n_gt == 0)

    def recall(self) -> float:
        if not self.images:
            return math.nan
        return _ratio(self.n_correct, self.n_gt, self.n_pred == self.n_gt == 0)

    def f1(self) -> float:
        p, r = self.precision(), self.recall()
        if math.isnan(p):
            return math.nan
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def summary(self) -> dict[str, float | int | None]:
        return {"grounding_f1": _json_number(self.f1()), "grounding_precision": _json_number(self.precision()),
                "grounding_recall": _json_number(self.recall()), "grounding_correct": self.n_correct,
                "grounding_predicted": self.n_pred, "grounding_gt": self.n_gt}


# --------------------------------------------------------------------------- text


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits; punctuation is dropped (no downloaded
    tokenizer data needed)."""
    return _TOKEN.findall(text.lower())


class _NoWordNet:
    """Stand-in for nltk's WordNet reader: no synonyms, so METEOR matches exact words and
    Porter stems only (WordNet data cannot be downloaded here)."""

    def synsets(self, *args: object, **kwargs: object) -> list:
        return []


def bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (nltk, smoothing method1), one reference per hypothesis; ``nan`` for
    an empty corpus, 0.0 if no hypothesis has a token."""
    # nltk and rouge_score take about a second to import: only the MIMO evaluation needs them
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    if len(hypotheses) != len(references):
        raise ValueError("hypotheses and references differ in length")
    if not hypotheses:
        return math.nan
    hyps = [tokenize(h) for h in hypotheses]
    if not any(hyps):
        return 0.0
    refs = [[tokenize(r)] for r in references]
    return float(corpus_bleu(refs, hyps, smoothing_function=SmoothingFunction().method1))


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # lazy: about a second to import (see bleu4)

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F-measure (rouge-score) of one answer."""
    if not tokenize(hypothesis) and not tokenize(reference):
        return 1.0
    return float(_rouge_scorer().score(reference, hypothesis)["rougeL"].fmeasure)


def meteor(hypothesis: str, reference: str) -> float:
    """METEOR (nltk) of one answer, exact + Porter-stem matching, no synonyms."""
    # lazy: nltk takes about a second to import (see bleu4)
    from nltk.stem.porter import PorterStemmer
    from nltk.translate.meteor_score import meteor_score

    hyp, ref = tokenize(hypothesis), tokenize(reference)
    if not hyp or not ref:
        return 1.0 if not hyp and not ref else 0.0
    return float(meteor_score([ref], hyp, stemmer=PorterStemmer(), wordnet=_NoWordNet()))


class TextAccumulator:
    """BLEU-4 (corpus), mean ROUGE-L and mean METEOR over generated answers."""

    def __init__(self) -> None:
        self.hypotheses: list[str] = []
        self.references: list[str] = []
        self.rouge: list[float] = []
        self.meteors: list[float] = []

    @property
    def count(self) -> int:
        return len(self.hypotheses)

    def add(self, hypothesis: str, reference: str) -> tuple[float, float]:
        """Record one answer; returns its ``(rouge_l, meteor)``."""
        r, m = rouge_l(hypothesis, reference), meteor(hypothesis, reference)
        self.hypotheses.append(hypothesis)
        self.references.append(reference)
        self.rouge.append(r)
        self.meteors.append(m)
        return r, m

    def summary(self) -> dict[str, float | int | None]:
        return {"bleu4": _json_number(bleu4(self.hypotheses, self.references)),
                "rouge_l": _json_number(_mean(self.rouge)), "meteor": _json_number(_mean(self.meteors)),
                "answers": self.count}


# --------------------------------------------------------------------------- per perspective


class Accumulator(Protocol):
    @property
    def count(self) -> int: ...

    def add(self, *args: Any, **kwargs: Any) -> Any: ...

    def summary(self) -> dict[str, float | int | None]: ...


A = TypeVar("A", bound=Accumulator)


class ByPerspective(Generic[A]):
    """One accumulator over everything plus one per group (e.g. MIMOSeg perspective), so a
    micro-averaged metric is reported both overall and per perspective."""

    def __init__(self, factory: Callable[[], A]) -> None:
        self.factory = factory
        self.overall: A = factory()
        self.groups: dict[str, A] = {}

    def add(self, group: str | None, *args: Any, **kwargs: Any) -> Any:
        """Record into the overall accumulator and, unless ``group`` is None, into that
        group's; returns what the overall ``add`` returned."""
        result = self.overall.add(*args, **kwargs)
        if group is not None:
            if group not in self.groups:
                self.groups[group] = self.factory()
            self.groups[group].add(*args, **kwargs)
        return result

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """``{"all": ..., group: ...}``, groups in sorted order."""
        return {"all": self.overall.summary(), **{g: self.groups[g].summary() for g in sorted(self.groups)}}

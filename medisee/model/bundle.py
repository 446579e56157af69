"""``MediSee``: the model together with its tokenizer and image preprocessing.

This is what a checkpoint folder holds and what the predictor and the training code use:
images in (uint8, already windowed), token batches, and the full training loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .. import losses
from ..config import LossWeights, MediSeeConfig
from ..conversation import IGNORE_INDEX, EncodedPrompt, PromptEncoder, answer_prefix
from ..tokenizer import candidate_token_ids
from .medisee import ImageEncoding, MediSeeModel
from .preprocess import clip_preprocess, postprocess_masks, sam_preprocess, structure_coverage, to_rgb_tensor
from .sentence_encoder import SentenceEncoder, load_sentence_encoder


@dataclass
class TokenBatch:
    """Padded conversations. ``answer_start`` (B,) is where each row's answer begins."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    image_mask: torch.Tensor  # (B, T) True where image features go
    labels: torch.Tensor  # (B, T), IGNORE_INDEX outside the answer
    answer_start: torch.Tensor  # (B,)


@dataclass
class TrainingSample:
    """One supervised conversation: ``answer`` holds one candidate-token group per target,
    ``masks`` (g, H, W) and ``boxes`` (g, 4; normalised xyxy) follow the same order.
    ``plain_query`` (a non-reasoning label query) enables the fine-tuning similarity loss."""

    image: np.ndarray
    query: str
    answer: str
    masks: np.ndarray
    boxes: np.ndarray
    plain_query: str | None = None
    referring_box: tuple[float, float, float, float] | None = None  # normalised xyxy drawn with the query
    referring_point: tuple[float, float] | None = None  # normalised (x, y) clicked with the query
    structures: dict[str, np.ndarray] | None = None  # every structure on the slice (name -> mask), for the patch head
    asked: tuple[str, ...] | None = None  # the catalogue structures the query asks for (None: unknown), for the query head


class MediSee:
    def __init__(self, config: MediSeeConfig, tokenizer, model: MediSeeModel | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        ids = candidate_token_ids(tokenizer, config.candidate_tokens)
        if len(tokenizer) > config.text.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {config.text.vocab_size}"
            )
        self.model = model if model is not None else MediSeeModel(config, ids)
        if self.model.candidate_token_ids != ids:
            raise ValueError(f"model candidate ids {self.model.candidate_token_ids} != tokenizer ids {ids}")
        if config.visual_tags or config.query_tags:
            words = [*config.patch_classes, "No"]
            self.model.set_tag_words([tokenizer(w, add_special_tokens=False)["input_ids"] for w in words])
        self.prompts = PromptEncoder(tokenizer, config.num_image_slot_tokens, placeholder_id=tokenizer.unk_token_id or 0,
                                     prompt_format=config.prompt_format)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.text_hidden_fcs[0].weight.dtype

    # -- images ---------------------------------------------------------------------------
    def prepare_images(self, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, list, list]:
        """uint8 images (H, W) or (H, W, 3), any sizes -> SAM pixels, CLIP pixels, resized
        and original sizes."""
        sam_cfg, clip_cfg = self.config.sam, self.config.clip
        sam, clip, resized, original = [], [], [], []
        resize = self.config.image_resize
        for image in images:
            rgb = to_rgb_tensor(image).unsqueeze(0)
            pixels, size = sam_preprocess(rgb, sam_cfg.image_size, sam_cfg.mean, sam_cfg.std, resize)
            sam.append(pixels)
            clip.append(clip_preprocess(rgb, clip_cfg.image_size, clip_cfg.mean, clip_cfg.std, clip_cfg.pad_to_square,
                                        resize))
            resized.append(size)
            original.append(tuple(rgb.shape[-2:]))
        device, dtype = self.device, self.dtype
        return torch.cat(sam).to(device, dtype), torch.cat(clip).to(device, dtype), resized, original

    def encode_images(self, images: list[np.ndarray]) -> ImageEncoding:
        return self.model.encode_images(*self.prepare_images(images))

    # -- text -----------------------------------------------------------------------------
    def tokenize(self, conversations: list[tuple[str, str | None]], padding_side: str = "right",
                 openings: list[list[int] | None] | None = None) -> TokenBatch:
        """(query, answer or None) pairs -> a padded batch (left padding for generation);
        ``openings`` gives generation rows the start of their answer (token ids)."""
        openings = openings or [None] * len(conversations)
        encoded = [self.prompts.encode(q, a, o) for (q, a), o in zip(conversations, openings, strict=True)]
        return pad_prompts(encoded, self.tokenizer.pad_token_id, padding_side, self.device)

    def referring_tensors(self, boxes: list, points: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row normalised boxes (B, 4) and points (B, 1, 2); None becomes NaN (no prompt)."""
        nan = float("nan")
        box_rows = [list(b) if b is not None else [nan] * 4 for b in boxes]
        point_rows = [[list(p) if p is not None else [nan, nan]] for p in points]
        return (torch.tensor(box_rows, dtype=self.dtype, device=self.device).reshape(-1, 4),
                torch.tensor(point_rows, dtype=self.dtype, device=self.device).reshape(-1, 1, 2))

    @cached_property
    def sentence_encoder(self) -> SentenceEncoder:
        """The frozen pretrained encoder behind the query tags, read on first use."""
        return load_sentence_encoder(self.config.sentence_encoder)

    def query_embeddings(self, queries: list[str]) -> torch.Tensor | None:
        """(B, D) sentence embeddings of the questions when the model reads query tags, else None."""
        if not self.config.query_tags:
            return None
        return self.sentence_encoder.encode(queries).to(self.device, self.dtype)

    def asked_structures(self, query: str) -> dict[str, float]:
        """How surely ``query`` asks for each patch class (the query head); empty without query tags."""
        embedding = self.query_embeddings([query])
        if embedding is None:
            return {}
        with torch.no_grad():
            probs = torch.sigmoid(self.model.query_head(embedding))[0].float().tolist()
        return dict(zip(self.config.patch_classes, probs))

    # -- training -------------------------------------------------------------------------
    def loss(self, samples: list[TrainingSample], weights: LossWeights | None = None,
             gt_box_prompts: float = 0.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Every loss term and their weighted ``total`` for a batch of samples.

        The similarity terms (eq. 5) use the samples that have a ``plain_query`` and at
        least one target; absent-target samples only contribute the text loss. With
        ``gt_box_prompts`` > 0, that fraction of targets prompts the mask head with the
        ground-truth box instead of the predicted one (box-prompted segmentation as MedSAM
        was trained; used when the mask head learns from scratch)."""
        images = self.encode_images([s.image for s in samples])
        tokens = self.tokenize([(s.query, s.answer) for s in samples])
        prompt_boxes = None
        if gt_box_prompts > 0:
            boxes = [torch.as_tensor(np.asarray(s.boxes, np.float32)).reshape(-1, 4) for s in samples]
            prompt_boxes = torch.cat(boxes).to(self.device)
            keep_predicted = torch.rand(len(prompt_boxes), generator=generator) >= gt_box_prompts
            prompt_boxes[keep_predicted.to(self.device)] = float("nan")
        referring_boxes, referring_points = self.referring_tensors(
            [s.referring_box for s in samples], [s.referring_point for s in samples])
        query_embeddings = self.query_embeddings([s.query for s in samples])
        fwd = self.model(images, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                         answer_start=tokens.answer_start, prompt_boxes=prompt_boxes,
                         referring_boxes=referring_boxes, referring_points=referring_points,
                         query_embeddings=query_embeddings)
        terms = self._supervised_terms(fwd, tokens, samples)
        if self.model.query_head is not None and (weights or self.config.loss).query > 0:
            known = [i for i, s in enumerate(samples) if s.asked is not None]
            if known:
                terms["query"] = self._query_term(query_embeddings[known], [samples[i].asked for i in known])
        if (weights or self.config.loss).decision > 0:
            terms["decision"] = self._decision_term(fwd, tokens)
        if (weights or self.config.loss).naming > 0:
            terms["naming"] = self._naming_term(fwd, tokens, [s.answer for s in samples])
        if self.model.patch_head is not None and (weights or self.config.loss).patch > 0:
            known = [i for i, s in enumerate(samples) if s.structures is not None]
            if known:
                terms["patch"] = self._patch_term(images, [samples[i].structures for i in known], known)
        paired = [i for i, s in enumerate(samples) if s.plain_query and len(s.masks)]
        if paired:
            terms.update(self._similarity_terms(fwd, tokens, images, samples, paired))
        terms["total"] = losses.combine(terms, weights or self.config.loss)
        return terms

    def segmentation_loss(self, images: list[np.ndarray], masks: list[np.ndarray], boxes: list[np.ndarray],
                          weights: LossWeights | None = None, jitter: float = 0.0,
                          generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Box-prompted segmentation of every target on each image, without the language
        model: how the mask head learns from scratch before the seg token carries meaning
        (MedSAM was trained the same way). ``masks[i]`` (k, H, W) and ``boxes[i]`` (k, 4;
        normalised xyxy) belong to ``images[i]``; boxes move by up to ``jitter`` of their size."""
        sam_pixels, _, resized, original = self.prepare_images(images)
        embeddings = self.model.mask_head.encode_image(sam_pixels)
        fine = self.model.mask_head.encode_fine(sam_pixels)
        image_of, prompts, targets = [], [], []
        for i, (image_masks, image_boxes) in enumerate(zip(masks, boxes)):
            for mask, box in zip(image_masks, image_boxes):
                image_of.append(i)
                prompts.append(torch.as_tensor(np.asarray(box, np.float32)))
                targets.append(torch.as_tensor(np.asarray(mask), device=self.device).float())
        if not prompts:
            raise ValueError("no targets to segment in this batch")
        prompts = torch.stack(prompts)
        if jitter > 0:
            size = (prompts[:, 2:] - prompts[:, :2]).repeat(1, 2)
            prompts = prompts + (torch.rand(prompts.shape, generator=generator) * 2 - 1) * jitter * size
        index = torch.tensor(image_of)
        scale = torch.tensor([[resized[i][1], resized[i][0]] * 2 for i in image_of], dtype=torch.float32)
        seg = torch.zeros(len(image_of), self.config.sam.prompt_dim, device=self.device, dtype=embeddings.dtype)
        rows = index.to(self.device)
        low_res, _ = self.model.mask_head.decode(embeddings[rows], seg, (prompts.clamp(0, 1) * scale).to(self.device),
                                                 fine=None if fine is None else fine[rows])
        size = self.config.sam.image_size
        bce, dice = [], []
        for g, i in enumerate(image_of):
            logits = postprocess_masks(low_res[g : g + 1], size, resized[i], original[i])
            bce.append(losses.mask_bce_loss(logits, targets[g][None]))
            dice.append(losses.mask_dice_loss(logits, targets[g][None]))
        terms = {"bce": torch.stack(bce).mean(), "dice": torch.stack(dice).mean()}
        terms["total"] = losses.combine(terms, weights or self.config.loss)
        return terms

    def _supervised_terms(self, fwd, tokens: TokenBatch, samples: list[TrainingSample]) -> dict[str, torch.Tensor]:
        lm = self.model.mllm
        targets = tokens.labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        logits = lm.logits(fwd.hidden[:, :-1][supervised])
        terms = {"ce": losses.text_ce_loss(logits, targets[supervised])}
        gt_masks, gt_boxes = self._group_targets(fwd.groups, samples)
        outputs = fwd.outputs
        if gt_masks:
            terms["bce"] = torch.stack([losses.mask_bce_loss(p[None], t[None]) for p, t in zip(outputs.mask_logits, gt_masks)]).mean()
            terms["dice"] = torch.stack([losses.mask_dice_loss(p[None], t[None]) for p, t in zip(outputs.mask_logits, gt_masks)]).mean()
            terms["l1"], terms["giou"] = losses.box_loss(outputs.boxes, torch.stack(gt_boxes))
        return terms

    def _decision_term(self, fwd, tokens: TokenBatch) -> torch.Tensor:
        """CE of each row's first answer token (present or not), predicted from the state
        just before it."""
        rows = torch.arange(len(tokens.answer_start), device=fwd.hidden.device)
        start = tokens.answer_start.to(fwd.hidden.device)
        logits = self.model.mllm.logits(fwd.hidden[rows, start - 1])
        return losses.text_ce_loss(logits, tokens.input_ids[rows, start])

    def _naming_term(self, fwd, tokens: TokenBatch, answers: list[str]) -> torch.Tensor:
        """CE of the answer tokens that name a structure or follow a grounded group
        (``PromptEncoder.naming_tokens``), each predicted from the state before it."""
        names = list(self.config.patch_classes)
        end = self.config.candidate_tokens[-1]
        rows, positions = [], []
        for row, answer in enumerate(answers):
            start = int(tokens.answer_start[row])
            for index in self.prompts.naming_tokens(answer, names, end):
                rows.append(row)
                positions.append(start + index)
        if not rows:
            return fwd.hidden.sum() * 0.0
        rows_t = torch.tensor(rows, device=fwd.hidden.device)
        positions_t = torch.tensor(positions, device=fwd.hidden.device)
        logits = self.model.mllm.logits(fwd.hidden[rows_t, positions_t - 1])
        return losses.text_ce_loss(logits, tokens.input_ids[rows_t, positions_t])

    def patch_loss(self, images: list[np.ndarray], structures: list[dict[str, np.ndarray]],
                   weights: LossWeights | None = None) -> dict[str, torch.Tensor]:
        """The patch head's loss alone, for images whose every structure is known: how the
        head learns before the language model reads its tags (training's ``patches`` phase)."""
        encoding = self.encode_images(images)
        terms = {"patch": self._patch_term(encoding, structures, list(range(len(images))))}
        terms["total"] = losses.combine(terms, weights or self.config.loss)
        return terms

    def _patch_term(self, images: ImageEncoding, structures: list[dict[str, np.ndarray]], rows: list[int]) -> torch.Tensor:
        """BCE of the patch head against the share of each image cell each known structure
        covers (structures not on the slice: zero everywhere)."""
        classes = self.config.patch_classes
        grid = images.sam.shape[-1]
        targets = torch.zeros(len(rows), grid * grid, len(classes))
        for row, on_slice in enumerate(structures):
            names = [name for name in on_slice if name in classes]
            if names:
                masks = torch.as_tensor(np.stack([on_slice[name] for name in names]))
                targets[row][:, [classes.index(name) for name in names]] = structure_coverage(masks, grid)
        index = torch.tensor(rows, device=images.sam.device)
        logits = self.model.patch_logits(images.sam[index], [images.resized[r] for r in rows])
        return losses.patch_loss(logits, targets.to(logits.device))

    def query_loss(self, queries: list[str], asked: list[tuple[str, ...]],
                   weights: LossWeights | None = None) -> dict[str, torch.Tensor]:
        """The query head's loss alone, from questions and the structures they ask for: how
        the head learns before the language model reads its tags (training's ``queries`` phase)."""
        if self.model.query_head is None:
            raise ValueError("the query loss needs a model with query_tags")
        terms = {"query": self._query_term(self.query_embeddings(queries), asked)}
        terms["total"] = losses.combine(terms, weights or self.config.loss)
        return terms

    def _query_term(self, embeddings: torch.Tensor, asked: list[tuple[str, ...]]) -> torch.Tensor:
        """BCE of the query head against which patch classes each question asks for."""
        classes = self.config.patch_classes
        targets = torch.zeros(len(asked), len(classes), device=embeddings.device)
        for row, names in enumerate(asked):
            targets[row, [classes.index(n) for n in names if n in classes]] = 1.0
        logits = self.model.query_head(embeddings)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)

    def _group_targets(self, groups, samples: list[TrainingSample]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Ground truth in group order (rows ascending, then occurrence in the answer)."""
        counts = torch.bincount(groups.rows, minlength=len(samples)).tolist() if len(groups) else [0] * len(samples)
        masks, boxes = [], []
        for row, sample in enumerate(samples):
            if counts[row] != len(sample.masks) or len(sample.masks) != len(sample.boxes):
                raise ValueError(
                    f"sample {row}: the answer has {counts[row]} grounded groups but "
                    f"{len(sample.masks)} masks and {len(sample.boxes)} boxes were given"
                )
            for mask, box in zip(sample.masks, sample.boxes):
                masks.append(torch.as_tensor(np.asarray(mask), device=self.device).float())
                boxes.append(torch.as_tensor(np.asarray(box, dtype=np.float32), device=self.device))
        return masks, boxes

    def _similarity_terms(self, fwd, tokens: TokenBatch, images: ImageEncoding, samples, paired: list[int]) -> dict[str, torch.Tensor]:
        """Sim(h_img, h_seg) of the reasoning query against that of the plain label query,
        answered with the same number of groups, for the ``paired`` rows."""
        prefix = answer_prefix(self.config.candidate_tokens)
        plain = self.tokenize([(samples[i].plain_query, " ".join([prefix] * len(samples[i].masks))) for i in paired])
        index = torch.tensor(paired, device=self.device)
        plain_fwd = self.model(images, plain.input_ids, plain.attention_mask, plain.image_mask,
                               image_index=index, answer_start=plain.answer_start)
        keep = torch.isin(fwd.groups.rows, index)
        rows = fwd.groups.rows[keep]
        reasoning_states = torch.stack([fwd.hidden[r][tokens.image_mask[r]] for r in rows.tolist()])
        reasoning_sim = losses.similarity_map(reasoning_states, fwd.outputs.seg_states[keep])
        plain_sim = self._group_similarity(plain_fwd, plain)
        if plain_sim.shape != reasoning_sim.shape:
            raise ValueError("the plain query must ground the same number of targets as the reasoning query")
        js, mse = losses.similarity_loss(reasoning_sim, plain_sim)
        return {"js": js, "mse": mse}

    @staticmethod
    def _group_similarity(fwd, tokens: TokenBatch) -> torch.Tensor:
        rows = fwd.groups.rows
        image_states = torch.stack([fwd.hidden[r][tokens.image_mask[r]] for r in rows.tolist()])
        return losses.similarity_map(image_states, fwd.outputs.seg_states)


def pad_prompts(encoded: list[EncodedPrompt], pad_id: int, padding_side: str, device) -> TokenBatch:
    """Pad token ids, masks and labels to a common length."""
    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    length = max(len(e.input_ids) for e in encoded)
    ids, attention, image, labels, starts = [], [], [], [], []
    for e in encoded:
        pad = length - len(e.input_ids)
        image_row = [False] * len(e.input_ids)
        image_row[e.image_at : e.image_at + e.num_image_tokens] = [True] * e.num_image_tokens
        row_labels = e.labels if e.labels else [IGNORE_INDEX] * len(e.input_ids)
        offset = pad if padding_side == "left" else 0

        def padded(values, fill):
            return [fill] * pad + values if padding_side == "left" else values + [fill] * pad

        ids.append(padded(e.input_ids, pad_id))
        attention.append(padded([1] * len(e.input_ids), 0))
        image.append(padded(image_row, False))
        labels.append(padded(row_labels, IGNORE_INDEX))
        starts.append(e.answer_start + offset)
    t = lambda x, dt: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
    return TokenBatch(t(ids, torch.long), t(attention, torch.long), t(image, torch.bool), t(labels, torch.long), t(starts, torch.long))

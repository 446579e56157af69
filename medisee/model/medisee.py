"""MediSee: the MLLM, the two routers, the seg projection, the box decoder and the MedSAM
head composed in one place (paper section 4, eq. 1-3).

Tensor conventions: a batch has B conversations (rows) over I images; ``image_index``
maps rows to images. A grounded group is the k-th occurrence of every candidate token in
a row; its candidate states are the final-layer states at the positions just before each
token (the states that predict them). Boxes are normalised (cx, cy, w, h) relative to the
image's width/height; SAM prompts are in the SAM input frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..boxes import cxcywh_to_xyxy
from ..config import MediSeeConfig
from .box_head import BoxDecoder
from .fusion import CandidateRouter
from .mllm import LlavaMLLM
from .preprocess import image_cells, postprocess_masks, to_clip_frame
from .seg_head import MaskHead
from .sentence_encoder import encoder_dim
from .trainable import inject_lora
from .visual_prompts import InputAligner, VisualPromptEncoder, prompt_class_weights


@dataclass
class ImageEncoding:
    """Both vision branches' outputs for I images (cacheable: they do not depend on text)."""

    sam: torch.Tensor  # (I, C, e, e) SAM image embeddings
    clip: torch.Tensor  # (I, N, H) projected CLIP patch features
    resized: list[tuple[int, int]]  # per image, (h, w) after resize-longest-side
    original: list[tuple[int, int]]  # per image, (H, W)
    fine: torch.Tensor | None = None  # (I, c, 4e, 4e) the mask head's fine features (``SamConfig.fine_features``)
    # (I, e * e, K) the patch head's probabilities, kept by inference (``MediSee.patch_probabilities``):
    # they depend on the image alone and every question about it reads them
    patch_probs: torch.Tensor | None = None

    def select(self, rows: list[int]) -> "ImageEncoding":
        """The encodings of ``rows`` (in that order)."""
        index = torch.tensor(rows, device=self.sam.device)
        pick = lambda tensor: None if tensor is None else tensor[index]  # noqa: E731
        return ImageEncoding(self.sam[index], self.clip[index], [self.resized[r] for r in rows],
                             [self.original[r] for r in rows], pick(self.fine), pick(self.patch_probs))

    @staticmethod
    def concat(parts: list["ImageEncoding"]) -> "ImageEncoding":
        """One encoding of every image of ``parts``, in order."""
        joined = lambda tensors: None if any(t is None for t in tensors) else torch.cat(tensors)  # noqa: E731
        return ImageEncoding(
            sam=torch.cat([p.sam for p in parts]),
            clip=torch.cat([p.clip for p in parts]),
            resized=[size for p in parts for size in p.resized],
            original=[size for p in parts for size in p.original],
            fine=joined([p.fine for p in parts]),
            patch_probs=joined([p.patch_probs for p in parts]),
        )


@dataclass
class Groups:
    """Grounded groups found in the token ids: G groups, n candidates each."""

    rows: torch.Tensor  # (G,) row of each group
    positions: torch.Tensor  # (G, n) position of each candidate token, in candidate order

    def __len__(self) -> int:
        return int(self.rows.numel())


@dataclass
class GroupOutputs:
    """Per-group predictions (G groups)."""

    seg_embeddings: torch.Tensor  # (G, C)
    seg_states: torch.Tensor  # (G, H) router R_s output, before the projection
    boxes: torch.Tensor  # (G, 4) normalised cx, cy, w, h
    router_seg_weights: torch.Tensor  # (G, n)
    router_box_weights: torch.Tensor  # (G, n)
    mask_logits: list[torch.Tensor] = field(default_factory=list)  # each (H_i, W_i)
    mask_quality: torch.Tensor | None = None  # (G,) stability of each mask (``mask_stability``)


def patch_head(channels: int, classes: int) -> nn.Sequential:
    """Dilated 3x3 convolutions (dilations 1, 2, 4, 8: a 31-cell field of view, so left
    and right organs are told apart by where they lie) with group norm, then per-cell logits."""
    layers: list[nn.Module] = []
    for dilation in (1, 2, 4, 8):
        layers += [nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation),
                   nn.GroupNorm(8, channels), nn.GELU()]
    return nn.Sequential(*layers, nn.Conv2d(channels, classes, 1))


def query_head(dim: int, hidden: int, classes: int) -> nn.Sequential:
    """Sentence embedding (D,) -> one logit per patch class: does the question ask for it."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, classes))


class MediSeeModel(nn.Module):
    def __init__(self, config: MediSeeConfig, candidate_token_ids: tuple[int, ...]) -> None:
        super().__init__()
        if len(candidate_token_ids) != config.num_candidates:
            raise ValueError(
                f"expected {config.num_candidates} candidate token ids, got {len(candidate_token_ids)}"
            )
        self.config = config
        self.candidate_token_ids = tuple(int(i) for i in candidate_token_ids)
        order = [config.candidate_tokens.index(t) for t in config.router_input_order]
        self.register_buffer("router_order", torch.tensor(order), persistent=False)
        hidden = config.text.hidden_size
        n = config.num_candidates
        self.mllm = LlavaMLLM(config)
        self.router_seg = CandidateRouter(hidden, n, config.router_hidden)
        self.router_box = CandidateRouter(hidden, n, config.router_hidden)
        self.text_hidden_fcs = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, config.sam.prompt_dim)
        )
        self.bbox_decoder = BoxDecoder(hidden, config.box_hidden)
        self.mask_head = MaskHead(config.sam)
        prompts = config.visual_prompts
        self.prompt_encoder = VisualPromptEncoder(prompts, hidden) if prompts is not None else None
        self.input_aligner = InputAligner(prompts, hidden) if prompts is not None and prompts.aligner else None
        # which structures cover each cell of the mask head's image embedding (``config.patch_classes``)
        self.patch_head = patch_head(config.sam.prompt_dim, len(config.patch_classes)) if config.patch_classes else None
        # which patch classes the question asks for, from its sentence embedding (``query_tags``)
        self.query_head = query_head(encoder_dim(config.sentence_encoder), config.query_head_hidden,
                                     len(config.patch_classes)) if config.query_tags else None
        # token ids of each patch class's name, then of "No" (set by ``set_tag_words``; -1 pads)
        self.register_buffer("tag_word_ids", torch.zeros(0, 1, dtype=torch.long), persistent=False)
        if config.lora is not None:
            inject_lora(self, config.lora)

    def set_tag_words(self, ids: list[list[int]]) -> None:
        """The visual tags' words: one token-id list per patch class, then one for "No"."""
        if len(ids) != len(self.config.patch_classes) + 1 or not all(ids):
            raise ValueError(f"expected {len(self.config.patch_classes) + 1} non-empty token lists for the visual tags")
        width = max(len(i) for i in ids)
        padded = [list(i) + [-1] * (width - len(i)) for i in ids]
        self.tag_word_ids = torch.tensor(padded, dtype=torch.long, device=self.tag_word_ids.device)

    # -- vision ---------------------------------------------------------------------------
    def encode_images(
        self,
        sam_pixels: torch.Tensor,
        clip_pixels: torch.Tensor,
        resized: list[tuple[int, int]],
        original: list[tuple[int, int]],
    ) -> ImageEncoding:
        """Both image encoders; gradients flow only when an encoder is being trained."""
        encoders = (self.mask_head.sam.vision_encoder, self.mllm.vision_tower, self.mllm.mm_projector)
        needs_grad = torch.is_grad_enabled() and any(
            p.requires_grad for module in encoders for p in module.parameters()
        )
        with torch.set_grad_enabled(needs_grad):
            encoding = ImageEncoding(
                sam=self.mask_head.encode_image(sam_pixels),
                clip=self.mllm.encode_images(clip_pixels),
                resized=list(resized),
                original=list(original),
            )
        # the fine stem trains with the mask decoder, whatever the encoders do
        encoding.fine = self.mask_head.encode_fine(sam_pixels)
        return encoding

    # -- the language model's input ------------------------------------------------------
    def embed_inputs(
        self,
        clip: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_mask: torch.Tensor,
        answer_start: torch.Tensor | None = None,
        referring_boxes: torch.Tensor | None = None,
        referring_points: torch.Tensor | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
        patch_probs: torch.Tensor | None = None,
        query_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the image slot filled: the row's CLIP features (B, N, H),
        then, with visual prompts configured, the aligner's queries (or the prompt tokens
        without the aligner), then with ``region_features`` what the box and point cover
        (CLIP tokens, so the LLM reads them as it reads the patches), then with
        ``visual_tags`` the tags (``visual_tags``; ``patch_probs`` (B, N, K) from
        ``patch_probabilities``), then with ``query_tags`` the query tags
        (``query_embeddings`` (B, D) from the sentence encoder). ``referring_boxes`` (B, 4) and
        ``referring_points`` (B, P, 2) are normalised to the rows' images, whose (h, w) ``image_sizes`` map them onto the
        CLIP canvas (square images need none); NaN (or None) means no prompt. The aligner
        reads only the question: positions before ``answer_start``, outside the image slot."""
        tokens = self.mllm.language_model.get_input_embeddings()(input_ids)
        parts = [clip.to(tokens)]
        boxes = points = image_boxes = image_points = None
        if self.prompt_encoder is not None:
            batch = input_ids.shape[0]
            if referring_boxes is None:
                referring_boxes = tokens.new_full((batch, 4), float("nan"))
            if referring_points is None:
                referring_points = tokens.new_full((batch, 0, 2), float("nan"))
            boxes, points = referring_boxes.to(tokens), referring_points.to(tokens)
            image_boxes, image_points = boxes, points
            if image_sizes is not None:
                boxes, points = self._clip_frame(boxes, points, image_sizes)
            prompts = self.prompt_encoder(boxes, points)
            if self.input_aligner is not None:
                positions = torch.arange(input_ids.shape[1], device=input_ids.device)
                question = attention_mask.bool() & ~image_mask
                if answer_start is not None:
                    question = question & (positions.unsqueeze(0) < answer_start.unsqueeze(1))
                grid = self.prompt_encoder.grid_encoding(int(round(clip.shape[1] ** 0.5)))
                prompts = self.input_aligner(clip.to(tokens), tokens, question, prompts, grid)
            parts.append(prompts)
            if self.config.visual_prompts.region_features:
                parts.append(self.prompt_encoder.region_tokens(boxes, points, clip.to(tokens)))
        if self.config.visual_tags:
            if patch_probs is None:
                raise ValueError("visual tags need the patch head's probabilities (patch_probabilities)")
            parts.append(self.visual_tags(patch_probs.to(tokens), image_boxes, image_points))
        if self.query_head is not None:
            if query_embeddings is None:
                raise ValueError("query tags need the question's sentence embedding (MediSee.query_embeddings)")
            asked = torch.sigmoid(self.query_head(query_embeddings.to(tokens))).detach()
            parts.append(self.query_tags(asked))
        features = torch.cat(parts, dim=1)
        return tokens.masked_scatter(image_mask.unsqueeze(-1), features.to(tokens.dtype))

    def patch_logits(self, sam: torch.Tensor, resized: list[tuple[int, int]]) -> torch.Tensor:
        """(B, e * e, K): the patch head on SAM image embeddings (B, C, e, e), per cell of an
        e x e grid over each image itself (row by row), whatever its padding on the canvas."""
        logits = self.patch_head(sam)
        side, size = sam.shape[-1], self.config.sam.image_size
        cells = [image_cells(logits[i], resized[i], size, side) for i in range(len(resized))]
        return torch.stack(cells).flatten(2).transpose(1, 2)

    def patch_probabilities(self, images: ImageEncoding) -> torch.Tensor:
        """(I, e * e, K) probabilities that each structure covers each image cell; detached:
        only the head's own loss trains it, the tags built from them do not. The encoding's
        own when inference kept them (``keep_patch_probabilities``)."""
        if images.patch_probs is not None:
            return images.patch_probs
        return torch.sigmoid(self.patch_logits(images.sam, images.resized)).detach()

    def keep_patch_probabilities(self, images: ImageEncoding) -> None:
        """Compute the patch head's probabilities once and keep them with the encoding (for
        inference: the head is frozen there, and the encoding is cached)."""
        if self.patch_head is not None and images.patch_probs is None:
            images.patch_probs = self.patch_probabilities(images)

    def visual_tags(self, probs: torch.Tensor, boxes: torch.Tensor | None = None,
                    points: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K [+ 1 + P], H): per patch class, p * name + (1 - p) * "No", with p the patch
        head's highest probability for the class on the slice (a mixture, not a scaled name:
        the LLM's RMSNorm would undo a scale); per given prompt, the names weighed by how
        surely it marks each structure (``prompt_class_weights``; zero when absent).
        ``probs`` (B, N, K) come from ``patch_probabilities``; boxes and points are
        normalised to the image, the frame of its cells."""
        names, no = self._tag_words(probs.shape[-1], probs.dtype)
        present = probs.amax(1).unsqueeze(-1)  # (B, K, 1)
        tags = [present * names + (1 - present) * no]
        if self.prompt_encoder is not None:
            coords, given = self.prompt_encoder.coordinates(boxes, points)
            tags.append(prompt_class_weights(probs, coords, given) @ names)
        return torch.cat(tags, dim=1)

    def query_tags(self, asked: torch.Tensor) -> torch.Tensor:
        """(B, K, H): per patch class, q * name + (1 - q) * "No", with q (B, K) how surely
        the question asks for it (the query head's probability; detached: only the query
        head's own loss trains it)."""
        names, no = self._tag_words(asked.shape[-1], asked.dtype)
        q = asked.unsqueeze(-1)
        return q * names + (1 - q) * no

    def _tag_words(self, classes: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The patch classes' name embeddings (K, H) (mean over their tokens) and "No"'s (H,)."""
        ids = self.tag_word_ids
        if ids.shape[0] != classes + 1:
            raise RuntimeError("tags need their words: MediSee(config, tokenizer) sets them")
        embedded = self.mllm.language_model.get_input_embeddings()(ids.clamp(min=0))
        valid = (ids >= 0).unsqueeze(-1).to(embedded.dtype)
        words = ((embedded * valid).sum(1) / valid.sum(1)).to(dtype)  # (K + 1, H)
        return words[:-1], words[-1]

    def _clip_frame(self, boxes: torch.Tensor, points: torch.Tensor,
                    sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.config.clip
        moved_boxes, moved_points = [], []
        for row, size in enumerate(sizes):
            resize = self.config.image_resize
            moved_boxes.append(to_clip_frame(boxes[row].view(2, 2), size, clip.image_size, clip.pad_to_square,
                                             resize).view(4))
            moved_points.append(to_clip_frame(points[row], size, clip.image_size, clip.pad_to_square, resize))
        return torch.stack(moved_boxes), torch.stack(moved_points)

    # -- candidate tokens -----------------------------------------------------------------
    def find_groups(self, input_ids: torch.Tensor, start: torch.Tensor | None = None) -> Groups:
        """Group the candidate tokens of each row; positions before ``start`` (B,) are
        ignored. Unequal counts (malformed output) keep only the complete groups."""
        rows, positions = [], []
        for row in range(input_ids.shape[0]):
            found = []
            for token_id in self.candidate_token_ids:
                pos = (input_ids[row] == token_id).nonzero().flatten()
                if start is not None:
                    pos = pos[pos >= start[row]]
                found.append(pos)
            count = min(len(p) for p in found)
            for k in range(count):
                rows.append(row)
                positions.append(torch.stack([p[k] for p in found]))
        device = input_ids.device
        if not rows:
            n = len(self.candidate_token_ids)
            return Groups(torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, n, dtype=torch.long, device=device))
        return Groups(torch.tensor(rows, device=device), torch.stack(positions))

    def decode_groups(self, hidden: torch.Tensor, groups: Groups) -> GroupOutputs:
        """Routers, seg projection and box decoder on the groups' candidate states.

        ``hidden`` (B, T, H) holds final-layer states; a candidate at position p uses
        ``hidden[row, p - 1]``."""
        states = hidden[groups.rows.unsqueeze(1), groups.positions - 1]  # (G, n, H)
        return self.decode_candidate_states(states)

    def decode_candidate_states(self, states: torch.Tensor) -> GroupOutputs:
        """(G, n, H) candidate states in candidate order -> group outputs."""
        routed = states[:, self.router_order]
        seg_state, seg_w = self.router_seg(routed)
        box_state, box_w = self.router_box(routed)
        return GroupOutputs(
            seg_embeddings=self.text_hidden_fcs(seg_state),
            seg_states=seg_state,
            boxes=self.bbox_decoder(box_state),
            router_seg_weights=seg_w,
            router_box_weights=box_w,
        )

    # -- masks ----------------------------------------------------------------------------
    def predict_masks(
        self,
        images: ImageEncoding,
        image_of_group: torch.Tensor,
        outputs: GroupOutputs,
        prompt_boxes: torch.Tensor | None = None,
        prompt_points: torch.Tensor | None = None,
    ) -> GroupOutputs:
        """Fill ``outputs.mask_logits`` (original resolution) and ``mask_quality``.

        The box prompt is the predicted box unless ``prompt_boxes`` (G, 4, normalised
        xyxy; NaN rows keep the prediction) overrides it; ``prompt_points`` (G, P, 2) are
        normalised (x, y) clicks."""
        if len(image_of_group) == 0:
            outputs.mask_logits, outputs.mask_quality = [], outputs.boxes.new_zeros(0)
            return outputs
        scale = torch.tensor(
            [[images.resized[i][1], images.resized[i][0]] for i in image_of_group.tolist()],
            dtype=outputs.boxes.dtype, device=outputs.boxes.device,
        )  # (G, 2) as (w, h) of the resized image
        sam = self.config.sam
        frame = scale if sam.box_prompt_frame == "image" else torch.full_like(scale, sam.image_size)
        boxes = box_prompts(outputs.boxes, prompt_boxes, frame, sam.box_prompt_dtype)
        points = None if prompt_points is None else prompt_points.to(scale) * scale.unsqueeze(1)
        fine = None if images.fine is None else images.fine[image_of_group]
        low_res, _ = self.mask_head.decode(images.sam[image_of_group], outputs.seg_embeddings, boxes, points, fine)
        size = self.config.sam.image_size
        outputs.mask_logits = [
            postprocess_masks(low_res[g : g + 1], size, images.resized[i], images.original[i])[0]
            for g, i in enumerate(image_of_group.tolist())
        ]
        outputs.mask_quality = mask_stability(low_res)
        return outputs

    # -- the whole forward pass (training and teacher-forced inference) ---------------------
    def forward(
        self,
        images: ImageEncoding,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_mask: torch.Tensor,
        image_index: torch.Tensor | None = None,
        answer_start: torch.Tensor | None = None,
        prompt_boxes: torch.Tensor | None = None,
        referring_boxes: torch.Tensor | None = None,
        referring_points: torch.Tensor | None = None,
        query_embeddings: torch.Tensor | None = None,
    ) -> "ForwardOutputs":
        """Teacher-forced pass over full conversations. Returns the final-layer states and
        the per-group predictions; losses are computed from these by ``medisee.losses``.
        ``prompt_boxes`` (G, 4) replaces the mask head's box prompt per group (NaN: keep);
        ``referring_boxes``/``referring_points`` are the rows' visual prompts (``embed_inputs``);
        a row's clicked points also prompt the mask head of its first group, as the
        predictor prompts it with the user's click (``clicks_on_first_groups``)."""
        if image_index is None:
            image_index = torch.arange(input_ids.shape[0], device=input_ids.device)
        patch_probs = self.patch_probabilities(images)[image_index] if self.config.visual_tags else None
        embeds = self.embed_inputs(images.clip[image_index], input_ids, attention_mask, image_mask, answer_start,
                                   referring_boxes, referring_points, [images.original[i] for i in image_index.tolist()],
                                   patch_probs, query_embeddings)
        hidden = self.mllm.hidden_states(embeds, attention_mask)
        groups = self.find_groups(input_ids, answer_start)
        outputs = self.decode_groups(hidden, groups)
        if prompt_boxes is not None and len(prompt_boxes) != len(groups):
            raise ValueError(f"{len(prompt_boxes)} prompt boxes for {len(groups)} grounded groups")
        prompt_points = clicks_on_first_groups(referring_points, groups.rows)
        outputs = self.predict_masks(images, image_index[groups.rows], outputs, prompt_boxes, prompt_points)
        return ForwardOutputs(hidden=hidden, groups=groups, outputs=outputs, image_index=image_index)


def box_prompts(predicted: torch.Tensor, given: torch.Tensor | None, scale: torch.Tensor,
                dtype: str | None) -> torch.Tensor:
    """(G, 4) xyxy box prompts in SAM input pixels: the predicted (cx, cy, w, h) boxes, or
    the ``given`` normalised xyxy ones (NaN rows keep the prediction), times ``scale`` (G, 2)
    as (w, h). With ``dtype`` ("bfloat16", the reference) the scaled (cx, cy, w, h) box is
    cast to it in float32 and its corners are computed in it, as the reference does."""
    if dtype is None:
        boxes = cxcywh_to_xyxy(predicted)
        if given is not None:
            given = given.to(boxes)
            boxes = torch.where(torch.isnan(given), boxes, given)
        return boxes * scale.repeat(1, 2)
    low = getattr(torch, dtype)
    factor = scale.float().repeat(1, 2)
    boxes = cxcywh_to_xyxy((predicted.float() * factor).to(low))
    if given is not None:
        given = (given.float() * factor).to(low)
        boxes = torch.where(torch.isnan(given), boxes, given)
    return boxes


STABILITY_OFFSET = 1.0  # logits, as segment-anything's automatic mask generator


def mask_stability(logits: torch.Tensor, offset: float = STABILITY_OFFSET) -> torch.Tensor:
    """(G,): segment-anything's stability score of mask logits (G, 1, h, w): the IoU of the
    mask cut at +offset with the mask cut at -offset (1 for a crisp mask, near 0 for a
    hesitant one; 0 when nothing passes -offset). Why not SAM's IoU head: the tiny preset's
    was never trained and said about 0.002 for every mask, good or bad."""
    flat = logits.flatten(1).float()
    inner = (flat > offset).sum(1)
    outer = (flat > -offset).sum(1)
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.zeros_like(inner, dtype=torch.float32))


def clicks_on_first_groups(referring_points: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    """(G, P, 2) mask-head point prompts: each row's clicks (B, P, 2) on the row's first
    group, NaN elsewhere; None when no row was clicked. Why the first: a clicked question
    (perspectives II and IV) grounds the structure it marks first. Without this the mask
    decoder never sees a point in training, yet the predictor gives it the user's click."""
    if referring_points is None or referring_points.shape[1] == 0 or torch.isnan(referring_points).all():
        return None
    out = referring_points.new_full((len(rows), referring_points.shape[1], 2), float("nan"))
    seen: set[int] = set()
    for g, row in enumerate(rows.tolist()):
        if row not in seen:
            seen.add(row)
            out[g] = referring_points[row]
    return out


@dataclass
class ForwardOutputs:
    hidden: torch.Tensor  # (B, T, H) final-layer states
    groups: Groups
    outputs: GroupOutputs
    image_index: torch.Tensor  # (B,)

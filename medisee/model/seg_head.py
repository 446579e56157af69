"""The MedSAM mask head through ``transformers``' SAM classes.

Sparse prompt = [user points (optional)] + [two corners of the box] + [the seg token
projected to the prompt width], dense prompt = the no-mask embedding, one mask out.
Boxes and points arrive in the SAM input frame (original pixels mapped through the same
resize-longest-side transform as the image), which fixes the reference's square-only scaling.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SamModel

from ..config import SamConfig
from .frozen_encoder_cache import FrozenEncoderCache

FINE_WIDTH = 16  # channels of the fine-feature stem's hidden layers


def fine_stem(out_channels: int) -> nn.Sequential:
    """Pixels (B, 3, S, S) -> (B, out_channels, S/2, S/2), the mask decoder's upscaled grid
    (4x the 16x-or-8x embedding for SAM's patch sizes; checked at decode time). The last
    layer is zero-initialised: the stem adds nothing until it trains."""
    stem = nn.Sequential(
        nn.Conv2d(3, FINE_WIDTH, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(FINE_WIDTH, FINE_WIDTH, 3, padding=1), nn.GELU(),
        nn.Conv2d(FINE_WIDTH, out_channels, 1),
    )
    nn.init.zeros_(stem[-1].weight)
    nn.init.zeros_(stem[-1].bias)
    return stem


class MaskHead(nn.Module):
    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        self.sam = SamModel(config.to_hf())
        # segment-anything draws this random Fourier matrix from N(0, 1) and keeps it as a
        # fixed buffer; transformers scales it by hidden_size / 2, so untrained (from scratch)
        # coordinates become noise-like high frequencies and the decoder cannot place a box.
        with torch.no_grad():
            self.sam.shared_image_embedding.positional_embedding.normal_(0.0, 1.0)
        # SAM's decoder upscales to prompt_dim / 8 channels; the stem adds to those
        self.fine_stem = fine_stem(config.prompt_dim // 8) if config.fine_features else None
        # set by training: image embeddings remembered while the image encoder is frozen
        self.frozen_cache: FrozenEncoderCache | None = None

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> image embeddings (B, prompt_dim, S/p, S/p)."""
        encoder = self.sam.vision_encoder
        if self.frozen_cache is None or any(p.requires_grad for p in encoder.parameters()):
            return encoder(pixel_values).last_hidden_state
        return self.frozen_cache.encode(pixel_values, lambda pixels: encoder(pixels).last_hidden_state)

    def encode_fine(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """(B, prompt_dim / 8, S/2, S/2) fine features, or None without the stem."""
        return None if self.fine_stem is None else self.fine_stem(pixel_values)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 1, 2, C) corner embeddings as segment-anything computes them for boxes in a low
        precision (the reference's bfloat16): the pixel-centre shift and the normalisation in
        the boxes' dtype, the positional encoding from float32 coordinates on."""
        encoder = self.sam.prompt_encoder
        coords = ((boxes + 0.5) / self.config.image_size).float().reshape(-1, 1, 2, 2)
        corners = encoder.shared_embedding(coords)
        corners[:, :, 0, :] += encoder.point_embed[2].weight
        corners[:, :, 1, :] += encoder.point_embed[3].weight
        return corners

    def decode(
        self,
        image_embeddings: torch.Tensor,
        seg_embeddings: torch.Tensor,
        boxes_xyxy: torch.Tensor | None,
        points_xy: torch.Tensor | None = None,
        fine: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt.

        image_embeddings: (N, C, e, e), one row per prompt (expand a shared slice embedding).
        seg_embeddings: (N, C) from the seg projection.
        boxes_xyxy: (N, 4) in SAM input pixels, or None.
        points_xy: (N, P, 2) positive clicks in SAM input pixels (NaN rows: none), or None.
        fine: (N, prompt_dim / 8, 4e, 4e) from ``encode_fine``, added to the decoder's
        upscaled embedding before its last activation; None for models without the stem.
        Returns low-resolution logits (N, 1, 4e, 4e) and the IoU prediction (N, 1).
        """
        encoder = self.sam.prompt_encoder
        parts = []
        if points_xy is not None:  # NaN points are padding (SAM's "not a point")
            absent = torch.isnan(points_xy).any(-1)
            labels = torch.where(absent, -1, 1).long()
            points = torch.nan_to_num(points_xy, nan=0.0)
            parts.append(encoder._embed_points(points.unsqueeze(1), labels.unsqueeze(1), pad=False))
        if boxes_xyxy is not None:
            parts.append(self._embed_boxes(boxes_xyxy) if self.config.box_prompt_dtype is not None
                         else encoder._embed_boxes(boxes_xyxy.unsqueeze(1).to(seg_embeddings.dtype)))
        parts.append(seg_embeddings[:, None, None, :])
        sparse = torch.cat([p.to(seg_embeddings.dtype) for p in parts], dim=2)
        n = seg_embeddings.shape[0]
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            n, -1, image_embeddings.shape[-2], image_embeddings.shape[-1]
        )
        positional = self.sam.get_image_wide_positional_embeddings().expand(n, -1, -1, -1)
        decoder = self.sam.mask_decoder
        # transformers' decoder has no input for extra features: a hook adds them to the
        # output of its last upscaling convolution, for this call only
        hook = None
        if fine is not None:
            expected = (n, decoder.upscale_conv2.out_channels, 4 * image_embeddings.shape[-2], 4 * image_embeddings.shape[-1])
            if tuple(fine.shape) != expected:
                raise ValueError(f"fine features {tuple(fine.shape)} do not match the decoder's upscaled grid {expected}")
            hook = decoder.upscale_conv2.register_forward_hook(lambda module, args, out: out + fine.to(out.dtype))
        try:
            masks, iou = decoder(
                image_embeddings=image_embeddings,
                image_positional_embeddings=positional.to(image_embeddings.dtype),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense.to(image_embeddings.dtype),
                multimask_output=False,
            )
        finally:
            if hook is not None:
                hook.remove()
        return masks[:, 0], iou[:, 0]

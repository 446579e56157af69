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

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> image embeddings (B, prompt_dim, S/p, S/p)."""
        return self.sam.vision_encoder(pixel_values).last_hidden_state

    def decode(
        self,
        image_embeddings: torch.Tensor,
        seg_embeddings: torch.Tensor,
        boxes_xyxy: torch.Tensor | None,
        points_xy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt.

        image_embeddings: (N, C, e, e), one row per prompt (expand a shared slice embedding).
        seg_embeddings: (N, C) from the seg projection.
        boxes_xyxy: (N, 4) in SAM input pixels, or None.
        points_xy: (N, P, 2) positive clicks in SAM input pixels (NaN rows: none), or None.
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
            parts.append(encoder._embed_boxes(boxes_xyxy.unsqueeze(1).to(seg_embeddings.dtype)))
        parts.append(seg_embeddings[:, None, None, :])
        sparse = torch.cat([p.to(seg_embeddings.dtype) for p in parts], dim=2)
        n = seg_embeddings.shape[0]
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            n, -1, image_embeddings.shape[-2], image_embeddings.shape[-1]
        )
        positional = self.sam.get_image_wide_positional_embeddings().expand(n, -1, -1, -1)
        masks, iou = self.sam.mask_decoder(
            image_embeddings=image_embeddings,
            image_positional_embeddings=positional.to(image_embeddings.dtype),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense.to(image_embeddings.dtype),
            multimask_output=False,
        )
        return masks[:, 0], iou[:, 0]

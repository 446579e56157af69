"""The medisee-7b preset computes what the reference computes: its CLIP processor's centre
crop and segment-anything's PIL resize, the box prompt rounded to bfloat16 in the square
canvas, segment-anything's LayerNorm eps, the forced fast-mode answer; the tiny preset keeps
its own choices."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from medisee.builder import build_random
from medisee.config import preset
from medisee.conversation import answer_prefix
from medisee.boxes import cxcywh_to_xyxy
from medisee.model.medisee import box_prompts
from medisee.model.preprocess import clip_preprocess, sam_preprocess, to_clip_frame
from medisee.model.seg_head import MaskHead
from medisee.predictor import Predictor

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def reference_settings(config):
    """``config`` with every inference choice the medisee-7b preset makes."""
    big = preset("medisee-7b")
    sam = dataclasses.replace(config.sam, decoder_layer_norm_eps=big.sam.decoder_layer_norm_eps,
                              box_prompt_dtype=big.sam.box_prompt_dtype, box_prompt_frame=big.sam.box_prompt_frame)
    return dataclasses.replace(config, clip=dataclasses.replace(config.clip, pad_to_square=big.clip.pad_to_square),
                               sam=sam, prompt_format=big.prompt_format, fast_answer=big.fast_answer,
                               image_resize=big.image_resize, score_threshold=big.score_threshold)


def test_the_presets_choose_reference_or_ours():
    big, tiny = preset("medisee-7b"), preset("tiny")
    assert (big.prompt_format, big.fast_answer, big.image_resize, big.clip.pad_to_square) == ("reference", "{tokens}.", "pil", False)
    assert (big.sam.decoder_layer_norm_eps, big.sam.box_prompt_dtype, big.sam.box_prompt_frame) == (1e-5, "bfloat16", "canvas")
    assert answer_prefix(big.candidate_tokens, big.fast_answer) == "[SEG] and [BBOX]."
    assert (tiny.prompt_format, tiny.image_resize, tiny.clip.pad_to_square, tiny.sam.box_prompt_dtype) == ("ours", "torch", True, None)
    assert answer_prefix(tiny.candidate_tokens, tiny.fast_answer) == "Sure, it is [SEG] and [BBOX]."
    with pytest.raises(ValueError, match="prompt_format must be one of"):
        dataclasses.replace(tiny, prompt_format="chatml")


@pytest.mark.parametrize("shape", [(96, 128), (130, 97), (64, 64)])
def test_clip_centre_crop_is_the_clip_processors(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                      image_mean=list(MEAN), image_std=list(STD))
    expected = processor(image, return_tensors="pt")["pixel_values"]
    ours = clip_preprocess(torch.from_numpy(image).permute(2, 0, 1)[None], 56, MEAN, STD, pad_to_square=False, resize="pil")
    assert torch.equal(ours, expected)


def test_to_clip_frame_follows_the_pil_crop():
    """A bright pixel's place in the cropped CLIP input is where ``to_clip_frame`` maps it."""
    image = np.zeros((90, 150, 3), dtype=np.uint8)
    image[40:50, 100:110] = 255
    pixels = clip_preprocess(torch.from_numpy(image).permute(2, 0, 1)[None], 60, MEAN, STD, False, "pil")[0, 0]
    rows, cols = (pixels > 0).nonzero(as_tuple=True)  # the bright square, centred on pixel (105, 45) of the image
    x, y = to_clip_frame(torch.tensor([105 / 150, 45 / 90]), (90, 150), 60, False, "pil").tolist()
    assert abs(x * 60 - (cols.float().mean() + 0.5)) < 0.5 and abs(y * 60 - (rows.float().mean() + 0.5)) < 0.5


def test_sam_input_is_segment_anythings_pil_resize():
    image = np.random.default_rng(1).integers(0, 256, (97, 130, 3), dtype=np.uint8)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    pixels, resized = sam_preprocess(torch.from_numpy(image).permute(2, 0, 1)[None], 256, mean, std, "pil")
    scale = 256 / 130  # ResizeLongestSide: int(side * scale + 0.5)
    size = (int(97 * scale + 0.5), int(130 * scale + 0.5))
    assert resized == size
    resized_image = np.array(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    expected = torch.from_numpy(resized_image).permute(2, 0, 1).float()
    expected = (expected - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.equal(pixels[0, :, : size[0], : size[1]], expected)
    assert not pixels[0, :, size[0]:].any() and not pixels[0, :, :, size[1]:].any()


def test_box_prompt_is_rounded_to_bfloat16_as_the_reference_rounds_it():
    boxes = torch.tensor([[0.4123, 0.5871, 0.3317, 0.2219], [0.7, 0.2, 0.05, 0.1]])
    canvas = torch.full((2, 2), 1024.0)
    ours = box_prompts(boxes, None, canvas, None)
    torch.testing.assert_close(ours, cxcywh_to_xyxy(boxes) * 1024)
    rounded = box_prompts(boxes, None, canvas, "bfloat16")
    scaled = (boxes * 1024).bfloat16()  # the reference: box * 1024 in float32, cast, then its xywh2xyxy
    x_c, y_c, w, h = scaled.unbind(-1)
    expected = torch.stack([x_c - 0.5 * w, y_c - 0.5 * h, x_c + 0.5 * w, y_c + 0.5 * h], dim=-1)
    assert rounded.dtype == torch.bfloat16 and torch.equal(rounded, expected)
    assert not torch.equal(rounded.float(), ours)  # the rounding is real at these sizes
    given = torch.tensor([[0.1, 0.1, 0.3, 0.3], [float("nan")] * 4])
    with_given = box_prompts(boxes, given, canvas, "bfloat16")
    assert torch.equal(with_given[0], (given[0] * 1024).bfloat16()) and torch.equal(with_given[1], expected[1])


def test_box_corners_are_encoded_as_segment_anything_encodes_bfloat16_boxes():
    config = dataclasses.replace(preset("tiny").sam, box_prompt_dtype="bfloat16")
    head = MaskHead(config)
    boxes = torch.tensor([[10.25, 200.5, 90.0, 250.75]]).bfloat16()
    encoder = head.sam.prompt_encoder
    matrix = encoder.shared_embedding.positional_embedding
    # segment-anything: +0.5 and / image size on the bfloat16 tensor, then float, 2x - 1, the random Fourier features
    coords = ((boxes + 0.5).reshape(-1, 2, 2) / config.image_size).float()
    coords = (2 * coords - 1) @ matrix
    expected = torch.cat([torch.sin(2 * math.pi * coords), torch.cos(2 * math.pi * coords)], dim=-1)
    expected[:, 0] += encoder.point_embed[2].weight[0]
    expected[:, 1] += encoder.point_embed[3].weight[0]
    torch.testing.assert_close(head._embed_boxes(boxes)[:, 0], expected, rtol=0, atol=1e-6)


def test_mask_decoder_layer_norm_eps_is_segment_anythings():
    ours = MaskHead(preset("tiny").sam).sam.mask_decoder
    reference = MaskHead(reference_settings(preset("tiny")).sam).sam.mask_decoder
    assert {m.eps for m in ours.transformer.layers.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    assert {m.eps for m in reference.transformer.layers.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
    # segment-anything's other decoder norms already match: 1e-5 after the last attention, 1e-6 when upscaling
    assert reference.transformer.layer_norm_final_attn.eps == 1e-5 and reference.upscale_layer_norm.eps == 1e-6


def test_fast_mode_forces_the_references_answer(tiny_tokenizer, phantom):
    bundle = build_random(reference_settings(preset("tiny")), seed=0, tokenizer=tiny_tokenizer)
    seen = []
    tokenize = bundle.tokenize
    bundle.tokenize = lambda conversations, *a, **k: seen.append(conversations) or tokenize(conversations, *a, **k)
    predictor = Predictor(bundle)
    prediction = predictor.predict(phantom[0], "where is the bright structure?", mode="fast")
    assert seen[0] == [("where is the bright structure?", "[SEG] and [BBOX].")]
    assert predictor.score_threshold == 0.0
    assert len(prediction.entities) <= 1 and all(e.mask.any() for e in prediction.entities)

"""Weight layouts: each mapping consumes every source key, fills every target tensor, uses
the key names the real files have, and round-trips to identical outputs."""

from __future__ import annotations

import pytest
import torch

from medisee import weights
from medisee.weights import WeightsError

QUERY = "which organ filters the blood?"
ANSWER = "Sure, it is [SEG] and [BBOX]. The kidney filters blood."


def outputs_of(bundle, image) -> list[torch.Tensor]:
    with torch.no_grad():
        enc = bundle.encode_images([image])
        tokens = bundle.tokenize([(QUERY, ANSWER)])
        fwd = bundle.model(enc, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                           answer_start=tokens.answer_start)
        logits = bundle.model.mllm.logits(fwd.hidden)
    out = fwd.outputs
    return [logits, out.boxes, out.seg_embeddings, out.mask_quality, *out.mask_logits]


def assert_same_outputs(a, b, image):
    for x, y in zip(outputs_of(a, image), outputs_of(b, image)):
        assert torch.equal(x, y)


def scramble(bundle, prefixes: tuple[str, ...]) -> None:
    """Overwrite every tensor under ``prefixes`` so only a successful load restores them."""
    with torch.no_grad():
        for name, tensor in bundle.model.state_dict().items():
            if name.startswith(prefixes) and tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.5 + 1.0)


# -- the key names of the real files, written out independently of the mapping --------------
def segment_anything_keys(config) -> set[str]:
    sam = config.sam
    keys = {"image_encoder.pos_embed", "image_encoder.patch_embed.proj.weight", "image_encoder.patch_embed.proj.bias",
            "image_encoder.neck.0.weight", "image_encoder.neck.1.weight", "image_encoder.neck.1.bias",
            "image_encoder.neck.2.weight", "image_encoder.neck.3.weight", "image_encoder.neck.3.bias"}
    for i in range(sam.num_hidden_layers):
        b = f"image_encoder.blocks.{i}."
        keys |= {b + k for k in ("norm1.weight", "norm1.bias", "attn.rel_pos_h", "attn.rel_pos_w", "attn.qkv.weight",
                                 "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                 "mlp.lin1.weight", "mlp.lin1.bias", "mlp.lin2.weight", "mlp.lin2.bias")}
    p = "prompt_encoder."
    keys |= {p + "pe_layer.positional_encoding_gaussian_matrix", p + "not_a_point_embed.weight", p + "no_mask_embed.weight"}
    keys |= {f"{p}point_embeddings.{i}.weight" for i in range(4)}
    keys |= {f"{p}mask_downscaling.{i}.{w}" for i in (0, 1, 3, 4, 6) for w in ("weight", "bias")}
    d = "mask_decoder."
    attn = lambda name: {f"{name}.{proj}.{w}" for proj in ("q_proj", "k_proj", "v_proj", "out_proj") for w in ("weight", "bias")}  # noqa: E731
    for i in range(sam.decoder_layers):
        layer = f"{d}transformer.layers.{i}."
        keys |= attn(layer + "self_attn") | attn(layer + "cross_attn_token_to_image") | attn(layer + "cross_attn_image_to_token")
        keys |= {f"{layer}norm{n}.{w}" for n in (1, 2, 3, 4) for w in ("weight", "bias")}
        keys |= {f"{layer}mlp.lin{n}.{w}" for n in (1, 2) for w in ("weight", "bias")}
    keys |= attn(d + "transformer.final_attn_token_to_image")
    keys |= {d + "transformer.norm_final_attn.weight", d + "transformer.norm_final_attn.bias"}
    keys |= {d + "iou_token.weight", d + "mask_tokens.weight"}
    keys |= {f"{d}output_upscaling.{i}.{w}" for i in (0, 1, 3) for w in ("weight", "bias")}
    keys |= {f"{d}output_hypernetworks_mlps.{m}.layers.{i}.{w}" for m in range(4) for i in range(3) for w in ("weight", "bias")}
    keys |= {f"{d}iou_prediction_head.layers.{i}.{w}" for i in range(3) for w in ("weight", "bias")}
    return keys


def clip_vision_keys(config, prefix: str = "vision_model.") -> set[str]:
    keys = {"embeddings.class_embedding", "embeddings.patch_embedding.weight", "embeddings.position_embedding.weight",
            "pre_layrnorm.weight", "pre_layrnorm.bias", "post_layernorm.weight", "post_layernorm.bias"}
    for i in range(config.clip.num_hidden_layers):
        layer = f"encoder.layers.{i}."
        keys |= {layer + f"self_attn.{p}.{w}" for p in ("q_proj", "k_proj", "v_proj", "out_proj") for w in ("weight", "bias")}
        keys |= {layer + f"{m}.{w}" for m in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2") for w in ("weight", "bias")}
    return {prefix + k for k in keys}


def llava_keys(config, lora: bool = False, prefix: str = "") -> set[str]:
    keys = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(config.text.num_hidden_layers):
        layer = f"model.layers.{i}."
        keys |= {layer + f"self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
        keys |= {layer + f"mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}
        keys |= {layer + "input_layernorm.weight", layer + "post_attention_layernorm.weight"}
        if lora:
            keys |= {layer + f"self_attn.{p}.lora_{ab}.default.weight" for p in ("q_proj", "v_proj") for ab in "AB"}
    keys |= {f"model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    keys |= clip_vision_keys(config, "model.vision_tower.vision_tower.vision_model.")
    return {prefix + k for k in keys}


def released_keys(config) -> set[str]:
    p = "base_model.model."
    keys = llava_keys(config, lora=True, prefix=p)
    keys |= {p + "model.visual_model." + k for k in segment_anything_keys(config)}
    keys |= {p + f"model.text_hidden_fcs.0.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    keys |= {p + f"model.bbox_decoder.layers.{i}.{w}" for i in range(3) for w in ("weight", "bias")}
    keys |= {p + f"model.{r}.gate.{i}.{w}" for r in ("router_seg", "router_box") for i in (0, 2) for w in ("weight", "bias")}
    return keys


def mimo_module_keys(model) -> set[str]:
    """The visual prompt encoder and input aligner (MIMO's, not in MediSee's release) keep our names."""
    return {"base_model.model.model." + k for k in model.state_dict() if k.startswith(("prompt_encoder.", "input_aligner."))}


# -- the four released layouts ------------------------------------------------------------------
def test_medsam_layout_round_trip(tiny_shared, tiny, phantom, tmp_path):
    exported = weights.export_layout(tiny_shared.model, weights.sam_key)
    assert set(exported) == segment_anything_keys(tiny_shared.config)
    torch.save(exported, tmp_path / "medsam_vit_b.pth")
    scramble(tiny, ("mask_head.",))
    report = weights.load_medsam(tiny, tmp_path / "medsam_vit_b.pth")
    assert len(report.filled) == sum(1 for k in tiny.model.state_dict() if k.startswith("mask_head."))
    assert_same_outputs(tiny_shared, tiny, phantom[0])


def test_clip_layout_round_trip_ignores_the_text_tower(tiny_shared, tiny, phantom, tmp_path):
    exported = weights.export_layout(tiny_shared.model, weights.clip_key)
    assert set(exported) == clip_vision_keys(tiny_shared.config)
    exported |= {"text_model.embeddings.token_embedding.weight": torch.zeros(3, 2),
                 "visual_projection.weight": torch.zeros(2, 2), "logit_scale": torch.tensor(1.0)}
    weights.write_state_dict(exported, tmp_path / "clip", "model", safetensors=True)
    scramble(tiny, ("mllm.vision_tower.",))
    report = weights.load_clip(tiny, tmp_path / "clip")
    assert sorted(report.ignored) == ["logit_scale", "text_model.embeddings.token_embedding.weight", "visual_projection.weight"]
    assert_same_outputs(tiny_shared, tiny, phantom[0])


def test_llava_med_layout_round_trip(tiny_shared, tiny, phantom, tmp_path):
    exported = weights.export_layout(tiny_shared.model, weights.llava_key)
    assert set(exported) == llava_keys(tiny_shared.config)
    weights.write_state_dict(exported, tmp_path / "llava", "model", shards=2, safetensors=True)
    scramble(tiny, ("mllm.",))
    with torch.no_grad():  # LoRA is not part of LLaVA-Med: copy it so outputs can match
        for name, tensor in tiny.model.state_dict().items():
            if "lora_" in name:
                tensor.copy_(tiny_shared.model.state_dict()[name])
    report = weights.load_llava_med(tiny, tmp_path / "llava")
    assert len(report.filled) == len(exported) and not report.resized
    assert_same_outputs(tiny_shared, tiny, phantom[0])


def test_llava_med_vocabulary_grows_for_the_candidate_tokens(tiny_shared, tiny, tmp_path):
    exported = weights.export_layout(tiny_shared.model, weights.llava_key)
    extra = tiny.config.num_candidates
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        exported[key] = exported[key][:-extra].clone()
    del_keys = [k for k in exported if k.startswith("model.vision_tower.")]
    for key in del_keys:  # LLaVA-Med folders may leave the CLIP tower to its own checkpoint
        del exported[key]
    weights.write_state_dict(exported, tmp_path / "llava", "model", shards=3)
    report = weights.load_llava_med(tiny, tmp_path / "llava")
    assert sorted(report.resized) == ["mllm.language_model.lm_head.weight", "mllm.language_model.model.embed_tokens.weight"]
    embed = tiny.model.mllm.language_model.model.embed_tokens.weight
    torch.testing.assert_close(embed[-1], exported["model.embed_tokens.weight"].mean(0))


def test_released_medisee_layout_round_trip(tiny_shared, tiny, phantom, tmp_path):
    exported = weights.export_layout(tiny_shared.model, weights.released_key)
    assert set(exported) == released_keys(tiny_shared.config) | mimo_module_keys(tiny_shared.model)
    assert mimo_module_keys(tiny_shared.model)
    weights.write_state_dict(exported, tmp_path / "medisee", "pytorch_model", shards=2)
    scramble(tiny, ("",))
    report = weights.load_released_medisee(tiny, tmp_path / "medisee")
    assert len(report.filled) == len(tiny.model.state_dict())
    assert_same_outputs(tiny_shared, tiny, phantom[0])


# -- clear errors -------------------------------------------------------------------------------
def test_missing_unexpected_and_misshaped_keys_are_named(tiny_shared, tiny, tmp_path):
    exported = weights.export_layout(tiny_shared.model, weights.sam_key)
    missing = dict(exported)
    del missing["mask_decoder.iou_token.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing key mask_decoder\.iou_token\.weight"):
        weights.load_medsam(tiny, tmp_path / "missing.pth")
    torch.save(exported | {"mask_decoder.surprise": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected key mask_decoder\.surprise"):
        weights.load_medsam(tiny, tmp_path / "extra.pth")
    exported["mask_decoder.iou_token.weight"] = torch.zeros(1, 3)
    torch.save(exported, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"key mask_decoder\.iou_token\.weight has shape \(1, 3\)"):
        weights.load_medsam(tiny, tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        weights.load_medsam(tiny, tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="no such file"):
        weights.load_medsam(tiny, tmp_path / "nowhere.pth")


# -- the project's own checkpoints ---------------------------------------------------------------
def test_checkpoint_reloads_to_identical_outputs(tiny_shared, phantom, tmp_path):
    target = tmp_path / "ckpt"
    weights.save_checkpoint(tiny_shared, target, metadata={"trained": False})
    weights.save_checkpoint(tiny_shared, target)  # overwriting an existing checkpoint is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    loaded = weights.load_checkpoint(target)
    assert loaded.config == tiny_shared.config
    assert_same_outputs(tiny_shared, loaded, phantom[0])


def test_damaged_checkpoints_are_clear_errors(tiny_shared, tmp_path):
    with pytest.raises(WeightsError, match="not a MediSee checkpoint folder"):
        weights.load_checkpoint(tmp_path)
    target = weights.save_checkpoint(tiny_shared, tmp_path / "ckpt")
    (target / weights.WEIGHTS_FILE).write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError, match="cannot read weights"):
        weights.load_checkpoint(target)

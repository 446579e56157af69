"""Assembling checkpoints from released artefacts, on tiny checkpoints written in the real layouts."""

from __future__ import annotations

import torch

from medisee import weights
from medisee.cli import main
from medisee.weights import load_checkpoint, read_metadata
from test_weights import assert_same_outputs


def write_release(bundle, root):
    """Tiny stand-ins for the downloads: LLaVA-Med (no CLIP tower), CLIP, MedSAM, MediSee."""
    llava = weights.export_layout(bundle.model, weights.llava_key)
    llava = {k: v for k, v in llava.items() if not k.startswith("model.vision_tower.")}
    weights.write_state_dict(llava, root / "llava-med", "model", shards=2, safetensors=True)
    bundle.tokenizer.save_pretrained(str(root / "llava-med"))
    weights.write_state_dict(weights.export_layout(bundle.model, weights.clip_key), root / "clip", "model", safetensors=True)
    torch.save(weights.export_layout(bundle.model, weights.sam_key), root / "medsam_vit_b.pth")
    weights.write_state_dict(weights.export_layout(bundle.model, weights.released_key), root / "medisee", "pytorch_model", shards=2)


def test_convert_released_medisee_reproduces_the_model(tiny_shared, phantom, tmp_path):
    write_release(tiny_shared, tmp_path)
    out = tmp_path / "ckpt"
    assert main(["convert", "--preset", "tiny", "--dtype", "float32", "--llava-med", str(tmp_path / "llava-med"),
                 "--medisee", str(tmp_path / "medisee"), "--out", str(out)]) == 0
    assert read_metadata(out)["trained"] is True
    assert_same_outputs(tiny_shared, load_checkpoint(out), phantom[0])


def test_convert_training_starting_point_initialises_the_new_parts(tiny_shared, tmp_path, capsys):
    write_release(tiny_shared, tmp_path)
    out = tmp_path / "start"
    base = ["convert", "--preset", "tiny", "--dtype", "float32", "--llava-med", str(tmp_path / "llava-med"),
            "--medsam", str(tmp_path / "medsam_vit_b.pth"), "--out", str(out)]
    assert main(base) == 2
    assert "give --clip" in capsys.readouterr().err
    assert main([*base, "--clip", str(tmp_path / "clip")]) == 0
    loaded = load_checkpoint(out)
    assert read_metadata(out)["trained"] is False
    reference = tiny_shared.model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.isfinite(tensor).all(), name
        if name.startswith(("mllm.", "mask_head.")) and "lora_" not in name:
            assert torch.equal(tensor, reference[name]), name
    assert not loaded.model.bbox_decoder.layers[-1].weight.any()
    lora_b = [t for n, t in loaded.model.state_dict().items() if "lora_B" in n]
    assert lora_b and not any(t.any() for t in lora_b)
    assert loaded.model.router_seg.gate[0].weight.std() > 0

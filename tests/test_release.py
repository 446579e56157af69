"""Assembling checkpoints from released artefacts, on checkpoints written in the real layouts:
sizes read from the downloads, both LoRA key spellings, files that disagree named, and the
full-size layout checked from shapes alone."""

from __future__ import annotations

import dataclasses
import json
import resource

import pytest
import torch

from medisee.builder import build_random
from medisee.cli import main
from medisee.config import preset
from medisee.model import MediSeeModel
from medisee.weights import load_checkpoint, read_metadata
from test_weights import assert_same_outputs
from tests.support.released import shape_only_release, write_release


def downloads(bundle, root, base_layer: bool = False) -> dict:
    """The four downloads of ``bundle`` with its tokenizer in the LLaVA-Med folder."""
    paths = write_release(bundle.model, bundle.config, root, bundle.config.text.vocab_size, base_layer)
    bundle.tokenizer.save_pretrained(str(paths["llava_med"]))
    return paths


def convert(paths: dict, *extra: str, medisee: bool = True, preset_name: str = "tiny") -> list[str]:
    args = ["convert", "--preset", preset_name, "--dtype", "float32", "--llava-med", str(paths["llava_med"])]
    args += ["--medisee", str(paths["medisee"])] if medisee else ["--medsam", str(paths["medsam"]), "--clip", str(paths["clip"])]
    return [*args, *extra]


def test_convert_released_medisee_reproduces_the_model(tiny_shared, phantom, tmp_path, capsys):
    paths = downloads(tiny_shared, tmp_path)
    out = tmp_path / "ckpt"
    assert main(convert(paths, "--out", str(out))) == 0
    assert read_metadata(out)["trained"] is True
    assert_same_outputs(tiny_shared, load_checkpoint(out), phantom[0])
    printed = capsys.readouterr().out
    for shard in sorted(paths["medisee"].glob("*.bin")):
        assert f"read {shard}" in printed
    assert f"read {paths['llava_med'] / 'config.json'}" in printed


@pytest.mark.parametrize("base_layer", [False, True])
def test_both_lora_key_spellings_load(tiny_shared, phantom, tmp_path, base_layer):
    paths = downloads(tiny_shared, tmp_path, base_layer=base_layer)
    keys = set(torch.load(next(paths["medisee"].glob("*-00001-*.bin")), weights_only=True)) | set(
        torch.load(next(paths["medisee"].glob("*-00002-*.bin")), weights_only=True))
    assert any(".q_proj.base_layer.weight" in k for k in keys) == base_layer
    assert main(convert(paths, "--out", str(tmp_path / "ckpt"))) == 0
    assert_same_outputs(tiny_shared, load_checkpoint(tmp_path / "ckpt"), phantom[0])


def test_a_weight_under_both_spellings_is_named(tiny_shared, tmp_path, capsys):
    paths = downloads(tiny_shared, tmp_path)
    shard = next(paths["medisee"].glob("*-00001-*.bin"))
    state = torch.load(shard, weights_only=True)
    key = next(k for k in state if k.endswith("self_attn.q_proj.weight"))
    state[key.replace(".q_proj.", ".q_proj.base_layer.")] = state[key].clone()
    torch.save(state, shard)
    assert main(convert(paths, "--check")) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "the same weight twice" in err and key in err


def test_convert_training_starting_point_initialises_the_new_parts(tiny_shared, tmp_path, capsys):
    paths = downloads(tiny_shared, tmp_path)
    out = tmp_path / "start"
    base = ["convert", "--preset", "tiny", "--dtype", "float32", "--llava-med", str(paths["llava_med"]),
            "--medsam", str(paths["medsam"]), "--out", str(out)]
    assert main(base) == 2
    assert "give --clip" in capsys.readouterr().err
    assert main([*base, "--clip", str(paths["clip"])]) == 0
    printed = capsys.readouterr().out
    for file in (paths["medsam"], paths["clip"] / "model.safetensors", paths["clip"] / "config.json",
                 *paths["llava_med"].glob("model-*.safetensors")):
        assert f"read {file}" in printed
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


def other_sizes():
    """The tiny preset at other sizes in every part the downloads describe."""
    tiny = preset("tiny")
    return dataclasses.replace(
        tiny,
        text=dataclasses.replace(tiny.text, hidden_size=96, intermediate_size=256, num_hidden_layers=3),
        clip=dataclasses.replace(tiny.clip, hidden_size=64, intermediate_size=128, num_hidden_layers=3),
        sam=dataclasses.replace(tiny.sam, hidden_size=64, num_hidden_layers=3, window_size=4, global_attn_indexes=(2,),
                                decoder_mlp_dim=128, iou_head_hidden_dim=32),
        router_hidden=64, box_hidden=48, lora=dataclasses.replace(tiny.lora, r=4, target_modules=("q_proj", "k_proj")),
    )


@pytest.mark.parametrize("medisee", [True, False])
def test_sizes_come_from_the_downloads_not_the_preset(tiny_tokenizer, phantom, tmp_path, medisee):
    variant = build_random(other_sizes(), seed=1, tokenizer=tiny_tokenizer)
    paths = downloads(variant, tmp_path)
    assert main(convert(paths, "--out", str(tmp_path / "ckpt"), medisee=medisee)) == 0
    loaded = load_checkpoint(tmp_path / "ckpt")
    expected = other_sizes()
    if not medisee:  # the starting point: heads and LoRA are not in LLaVA-Med or MedSAM, they follow the preset
        tiny = preset("tiny")
        expected = dataclasses.replace(expected, router_hidden=tiny.router_hidden, box_hidden=tiny.box_hidden,
                                       lora=tiny.lora)
    assert loaded.config == expected
    if medisee:
        assert_same_outputs(variant, loaded, phantom[0])


def test_files_that_disagree_are_named(tiny_shared, tmp_path, capsys):
    paths = downloads(tiny_shared, tmp_path)
    clip_file, llava_file = paths["clip"] / "config.json", paths["llava_med"] / "config.json"
    clip = json.loads(clip_file.read_text())
    clip["vision_config"]["hidden_size"] = 64
    clip_file.write_text(json.dumps(clip))
    assert main(convert(paths, "--check", medisee=False)) == 2
    err = capsys.readouterr().err
    assert str(clip_file) in err and str(llava_file) in err and "mm_hidden_size 96" in err
    clip["vision_config"]["hidden_size"] = 96
    clip["vision_config"]["intermediate_size"] = 192
    clip_file.write_text(json.dumps(clip))
    assert main(convert(paths, "--check", medisee=False)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medisee: error: {paths['clip'] / 'model.safetensors'}: key vision_model.encoder.layers.0.mlp.fc1")
    assert f"{clip_file} gives the model (192, 96)" in err and len(err.splitlines()) == 1
    llava = json.loads(llava_file.read_text())
    llava["intermediate_size"] = 320
    llava_file.write_text(json.dumps(llava))
    assert main(convert(paths, "--check")) == 2
    err = capsys.readouterr().err
    assert "model.layers.0.mlp.gate_proj.weight has shape (384, 128)" in err
    assert f"{llava_file} gives the model (320, 128)" in err and "pytorch_model-0000" in err


def test_full_size_release_layout_is_checked_from_shapes_alone(tmp_path, capsys):
    """medisee-7b's downloads at full size (15 GB of bf16 tensors) as headers and meta
    tensors: `convert --check` reads every file and allocates none of it."""
    from medisee.builder import tokenizer_corpus
    from medisee.tokenizer import write_sentencepiece_tokenizer

    config = preset("medisee-7b")
    with torch.device("meta"):
        model = MediSeeModel(config, (32000, 32001)).to(torch.bfloat16)
    files = shape_only_release(model, config, tmp_path, vocab_size=32000)
    write_sentencepiece_tokenizer(tmp_path / "llava-med", tokenizer_corpus(), 1000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base = ["convert", "--check", "--llava-med", str(tmp_path / "llava-med")]
    assert main([*base, "--medisee", str(tmp_path / "medisee")]) == 0
    released = capsys.readouterr().out
    assert main([*base, "--medsam", str(tmp_path / "medsam_vit_b.pth"), "--clip", str(tmp_path / "clip")]) == 0
    start = capsys.readouterr().out
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 2 * 1024 * 1024, f"the check allocated {grown_kib / 1024:.0f} MiB"
    assert "vocabulary 32002" in released and "4096 wide, 32 layers" in released
    for file in files:  # the released folder needs LLaVA-Med's config and tokenizer, the starting point the rest
        assert f"read {file}" in (released if file.parent.name == "medisee" else start), file
    for name in ("config.json", "tokenizer.model", "tokenizer_config.json"):
        assert f"read {tmp_path / 'llava-med' / name}" in released
    assert "check passed" in released and "check passed" in start

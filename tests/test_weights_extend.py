"""Extending a checkpoint with new modules (MIMO's visual prompts) keeps its trained
weights; the training config allows such changes only on a checkpoint init."""

import dataclasses

import pytest
import torch

from medisee.builder import build_random
from medisee.config import VisualPromptConfig, preset
from medisee.weights import WeightsError, extend_checkpoint, load_checkpoint, save_checkpoint

PROMPTS = {"embed_dim": 32, "num_queries": 8, "aligner_layers": 1, "aligner_heads": 4}
NEW = ("prompt_encoder.", "input_aligner.")


@pytest.fixture
def plain_checkpoint(tmp_path, tiny_tokenizer):
    """A tiny MediSee without visual prompts, as released checkpoints are, with non-default weights."""
    config = dataclasses.replace(preset("tiny"), visual_prompts=None)
    bundle = build_random(config, seed=3, tokenizer=tiny_tokenizer)
    with torch.no_grad():
        bundle.model.bbox_decoder.layers[-1].bias.add_(0.5)  # "trained": not what any seed gives
    path = save_checkpoint(bundle, tmp_path / "plain")
    return path, {k: v.clone() for k, v in bundle.model.state_dict().items()}


def test_extending_keeps_every_weight_and_adds_the_prompt_modules(plain_checkpoint):
    path, old = plain_checkpoint
    assert not any(k.startswith(NEW) for k in old)
    extended = extend_checkpoint(path, {"visual_prompts": PROMPTS})
    assert extended.config.visual_prompts == VisualPromptConfig(**PROMPTS)
    assert extended.config.num_image_slot_tokens == extended.config.clip.num_patches + 8
    assert extended.prompts.num_image_tokens == extended.config.num_image_slot_tokens  # the slot grew with it
    state = extended.model.state_dict()
    for key, value in old.items():
        assert torch.equal(state[key], value), key
    added = set(state) - set(old)
    assert added and all(k.startswith(NEW) for k in added)
    assert any(k.startswith("prompt_encoder.") for k in added) and any(k.startswith("input_aligner.") for k in added)
    assert "prompt_encoder.positional_gaussian" in added and "input_aligner.queries" in added
    # the checkpoint folder itself is untouched, and the extension is reproducible
    reloaded = load_checkpoint(path)
    assert reloaded.config.visual_prompts is None
    again = extend_checkpoint(path, {"visual_prompts": PROMPTS}).model.state_dict()
    for key in added:
        assert torch.equal(again[key], state[key]), key
    # the extended bundle saves and loads as an ordinary checkpoint
    saved = save_checkpoint(extended, path.parent / "extended")
    loaded = load_checkpoint(saved).model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_changes_that_reshape_or_drop_trained_weights_are_refused(plain_checkpoint):
    path, _ = plain_checkpoint
    with pytest.raises(WeightsError, match="reshape"):
        extend_checkpoint(path, {"box_hidden": 64})
    with pytest.raises(WeightsError, match="drop"):
        extend_checkpoint(path, {"lora": None})


def test_invalid_changes_are_refused(plain_checkpoint):
    path, _ = plain_checkpoint
    with pytest.raises(WeightsError, match="not_a_setting"):
        extend_checkpoint(path, {"not_a_setting": 1})
    with pytest.raises(WeightsError, match="bogus"):
        extend_checkpoint(path, {"visual_prompts": {**PROMPTS, "bogus": 2}})
    # a config the modules refuse to build (128 is not divisible by 5): a ValueError naming the setting
    # (currently a plain ValueError, not WeightsError: the model is built outside the try in extend_checkpoint)
    with pytest.raises(ValueError, match="aligner_heads"):
        extend_checkpoint(path, {"visual_prompts": {**PROMPTS, "aligner_heads": 5}})

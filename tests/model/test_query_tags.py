"""Query tags (ours): which catalogue structures the question asks for, read by the LLM."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medisee.builder import build_random
from medisee.config import preset
from medisee.model import TrainingSample

CLASSES = ("liver", "left kidney")
QUERY = "Please segment the liver."


def queried_config(**changes):
    return dataclasses.replace(preset("tiny"), patch_classes=CLASSES, query_tags=True, **changes)


def test_query_tags_need_patch_classes_and_end_the_slot_after_the_visual_tags():
    with pytest.raises(ValueError, match="query_tags needs patch_classes"):
        dataclasses.replace(preset("tiny"), query_tags=True)
    alone, both = queried_config(), queried_config(visual_tags=True)
    assert alone.num_tag_tokens == len(CLASSES)
    vp = both.visual_prompts
    assert both.num_tag_tokens == len(CLASSES) + 1 + vp.max_points + len(CLASSES)


def test_query_tags_mix_each_name_with_no_by_the_query_heads_probability(tiny_tokenizer):
    bundle = build_random(queried_config(), seed=0, tokenizer=tiny_tokenizer)
    model = bundle.model
    embed = model.mllm.language_model.get_input_embeddings()

    def word(text: str) -> torch.Tensor:
        return embed(torch.tensor(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])).mean(0)

    with torch.no_grad():
        last = model.query_head[-1]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor([0.9, 0.2])))
        tokens = bundle.tokenize([(QUERY, None)])
        clip = torch.zeros(1, bundle.config.clip.num_patches, bundle.config.text.hidden_size)
        embeds = model.embed_inputs(clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                                    query_embeddings=bundle.query_embeddings([QUERY]))
        tags = embeds[0][tokens.image_mask[0]][-len(CLASSES):]
        no = word("No")
        torch.testing.assert_close(tags[0], 0.9 * word("liver") + 0.1 * no)
        torch.testing.assert_close(tags[1], 0.2 * word("left kidney") + 0.8 * no)
    with pytest.raises(ValueError, match="sentence embedding"):
        model.embed_inputs(clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask)


def test_the_query_head_learns_from_its_own_loss_and_the_tags_pass_no_gradient_to_it(tiny_tokenizer, phantom):
    bundle = build_random(queried_config(), seed=0, tokenizer=tiny_tokenizer)
    image, mask, box = phantom
    sample = TrainingSample(image, QUERY, "Sure, it is [SEG] and [BBOX].", mask[None], box[None], asked=("liver",))
    bundle.model.query_head.zero_grad()
    terms = bundle.loss([dataclasses.replace(sample, asked=None)])
    assert "query" not in terms
    terms["total"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in bundle.model.query_head.parameters())

    queries = [QUERY, "where is the L kidney", "segment the gallbladder", "liver and left kidney please"]
    asked = [("liver",), ("left kidney",), (), ("liver", "left kidney")]
    optimiser = torch.optim.Adam(bundle.model.query_head.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        optimiser.zero_grad()
        loss = bundle.query_loss(queries, asked)["query"]
        loss.backward()
        optimiser.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.2 * first
    with torch.no_grad():
        probs = torch.sigmoid(bundle.model.query_head(bundle.query_embeddings(queries)))
    assert np.array_equal((probs > 0.5).numpy(), np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool))


def test_models_without_query_tags_need_no_sentence_encoder(tiny_shared):
    assert tiny_shared.query_embeddings([QUERY]) is None
    with pytest.raises(ValueError, match="query_tags"):
        tiny_shared.query_loss([QUERY], [("liver",)])

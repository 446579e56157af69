"""MIMO's visual referring input: the prompt encoder, the input aligner, how their tokens
fill the LLM's image slot, the "w/o Aligner" ablation, and the predictor's helpers that
tie a drawn prompt to one predicted entity."""

import dataclasses
import functools

import pytest
import torch

from medisee.builder import build_random
from medisee.config import MediSeeConfig, VisualPromptConfig, preset
from medisee.model import TrainingSample
from medisee.model.medisee import clicks_on_first_groups
from medisee.model.trainable import configure_trainable
from medisee.model.visual_prompts import BOX_END, BOX_START, NOT_A_PROMPT, POINT, InputAligner, VisualPromptEncoder
from medisee.predictor import PromptInputs, distinct_name, entity_phrase, owner_of_prompt

QUERY = "which organ filters the blood?"
ANSWER = "Sure, it is [SEG] and [BBOX]. The kidney filters blood."
NAN = float("nan")


def prompt_config(**changes) -> VisualPromptConfig:
    return dataclasses.replace(VisualPromptConfig(embed_dim=16, num_queries=5, aligner_layers=1, aligner_heads=4), **changes)


def seeded(cls, config, hidden=32, seed=0):
    torch.manual_seed(seed)
    return cls(config, hidden).eval()


def slot(embeds: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
    """(B, slot, H): the image-slot positions of each row, in order."""
    return embeds[image_mask].reshape(embeds.shape[0], -1, embeds.shape[-1])


# -- the prompt encoder ---------------------------------------------------------------------
def test_prompt_tokens_have_two_corners_and_max_points_with_padding():
    encoder = seeded(VisualPromptEncoder, prompt_config(max_points=3))
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]])
    for count in (0, 1, 3):
        points = torch.rand(2, count, 2)
        assert encoder(boxes, points).shape == (2, 2 + 3, 32)
    # fewer points than max_points: the missing ones are "not a prompt" tokens
    one = encoder(boxes, torch.tensor([[[0.4, 0.4]], [[0.6, 0.2]]]))
    explicit = encoder(boxes, torch.tensor([[[0.4, 0.4], [NAN, NAN], [NAN, NAN]], [[0.6, 0.2], [NAN, NAN], [NAN, NAN]]]))
    torch.testing.assert_close(one, explicit)
    with pytest.raises(ValueError, match="at most 3"):
        encoder(boxes, torch.rand(2, 4, 2))
    for bad_boxes, bad_points in [
        (torch.rand(2, 2, 2), torch.rand(2, 1, 2)),  # boxes not (B, 4)
        (torch.rand(2, 4), torch.rand(2, 1, 3)),  # points not (..., 2)
        (torch.rand(2, 4), torch.rand(3, 1, 2)),  # batch mismatch
        (torch.rand(2, 4), torch.rand(2, 2)),  # points not 3-D
    ]:
        with pytest.raises(ValueError, match="expected boxes"):
            encoder(bad_boxes, bad_points)


def test_absent_prompts_are_the_not_a_prompt_embedding_and_present_ones_carry_position():
    encoder = seeded(VisualPromptEncoder, prompt_config(max_points=1))
    with torch.no_grad():
        # a NaN anywhere in a coordinate pair makes it absent, whatever the other number is
        a = encoder(torch.tensor([[NAN, NAN, NAN, NAN]]), torch.tensor([[[NAN, NAN]]]))
        b = encoder(torch.tensor([[0.9, NAN, NAN, 0.1]]), torch.tensor([[[NAN, 0.3]]]))
        torch.testing.assert_close(a, b)
        # every absent token is the same vector: project(type_embeddings[NOT_A_PROMPT])
        expected = encoder.project(encoder.type_embeddings.weight[NOT_A_PROMPT])
        for k in range(3):
            torch.testing.assert_close(a[0, k], expected)
        # a present box changes its corner tokens (and only those), and the corners differ by position
        box = encoder(torch.tensor([[0.1, 0.2, 0.7, 0.8]]), torch.tensor([[[NAN, NAN]]]))
        moved = encoder(torch.tensor([[0.3, 0.2, 0.7, 0.9]]), torch.tensor([[[NAN, NAN]]]))
    assert not torch.allclose(box[0, 0], a[0, 0]) and not torch.allclose(box[0, 1], a[0, 1])
    torch.testing.assert_close(box[0, 2], a[0, 2])
    assert not torch.allclose(box[0, 0], moved[0, 0]) and not torch.allclose(box[0, 1], moved[0, 1])
    # same coordinates, different type: a box corner is not a point
    with torch.no_grad():
        as_point = encoder(torch.full((1, 4), NAN), torch.tensor([[[0.1, 0.2]]]))
    assert not torch.allclose(as_point[0, 2], box[0, 0])
    assert len({BOX_START, BOX_END, POINT, NOT_A_PROMPT}) == 4


def test_positional_encoding_is_a_fixed_saved_buffer():
    encoder = seeded(VisualPromptEncoder, prompt_config())
    coords = torch.tensor([[0.0, 0.0], [0.25, 0.75], [1.0, 1.0]])
    first = encoder.positional_encoding(coords)
    torch.testing.assert_close(encoder.positional_encoding(coords), first)
    assert first.shape == (3, 16)
    torch.testing.assert_close(first[:, :8] ** 2 + first[:, 8:] ** 2, torch.ones(3, 8))  # sin^2 + cos^2
    names = dict(encoder.named_parameters())
    assert "positional_gaussian" not in names and encoder.positional_gaussian.requires_grad is False
    state = encoder.state_dict()
    assert "positional_gaussian" in state and state["positional_gaussian"].shape == (2, 8)
    # same seed -> same frequencies; a reloaded encoder encodes the same way
    other = seeded(VisualPromptEncoder, prompt_config(), seed=1)
    assert not torch.allclose(other.positional_encoding(coords), first)
    other.load_state_dict(state)
    torch.testing.assert_close(other.positional_encoding(coords), first)
    with pytest.raises(ValueError, match="even"):
        VisualPromptEncoder(prompt_config(embed_dim=15), 32)


# -- the input aligner ------------------------------------------------------------------------
def test_aligner_reads_only_the_masked_question_and_the_prompts():
    aligner = seeded(InputAligner, prompt_config())
    g = torch.Generator().manual_seed(0)
    image, text, prompts = torch.randn(2, 6, 32, generator=g), torch.randn(2, 7, 32, generator=g), torch.randn(2, 3, 32, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 1]], dtype=torch.bool)
    grid = torch.randn(6, prompt_config().embed_dim, generator=g)  # the image tokens' positional encodings
    aligner = functools.partial(aligner, image_positions=grid)
    with torch.no_grad():
        out = aligner(image, text, text_mask, prompts)
        assert out.shape == (2, 5, 32)
        ignored = text.clone()
        ignored[~text_mask] = 100 * torch.randn(int((~text_mask).sum()), 32, generator=g)
        torch.testing.assert_close(aligner(image, ignored, text_mask, prompts), out)
        read = text.clone()
        read[0, 1, :5] += 3.0  # not a constant shift (the input LayerNorm removes those)
        changed = aligner(image, read, text_mask, prompts)
        assert not torch.allclose(changed[0], out[0])
        torch.testing.assert_close(changed[1], out[1])  # rows are independent
        other_prompts = prompts.clone()
        other_prompts[1, 0, :5] += 3.0  # not a constant shift: the input LayerNorm would remove that
        changed = aligner(image, text, text_mask, other_prompts)
        assert not torch.allclose(changed[1], out[1])
        torch.testing.assert_close(changed[0], out[0])
        moved = aligner(image, text, text_mask, prompts, image_positions=grid.flip(0))
        assert not torch.allclose(moved, out)  # where each image token lies matters
    with pytest.raises(ValueError, match="aligner_heads"):
        InputAligner(prompt_config(aligner_heads=5), 32)


# -- the language model's input ---------------------------------------------------------------
def embed(bundle, conversations, clip=None, answer_start=True, **referring):
    tokens = bundle.tokenize(conversations)
    model, config = bundle.model, bundle.config
    if clip is None:
        clip = torch.randn(len(conversations), config.clip.num_patches, config.text.hidden_size,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeds = model.embed_inputs(clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                                    tokens.answer_start if answer_start else None, **referring)
    return tokens, clip, embeds


def test_the_image_slot_holds_clip_features_then_the_aligners_queries(tiny_shared):
    bundle, config = tiny_shared, tiny_shared.config
    model = bundle.model
    n = config.clip.num_patches
    assert config.num_image_slot_tokens == n + 16
    tokens, clip, embeds = embed(bundle, [(QUERY, ANSWER), ("where is the liver?", "It is [SEG] and [BBOX].")])
    assert tokens.image_mask.sum(1).tolist() == [n + 16, n + 16]
    filled = slot(embeds, tokens.image_mask)
    torch.testing.assert_close(filled[:, :n], clip)
    # the queries' output, recomputed from its documented inputs
    with torch.no_grad():
        words = model.mllm.language_model.get_input_embeddings()(tokens.input_ids)
        positions = torch.arange(tokens.input_ids.shape[1])
        question = tokens.attention_mask.bool() & ~tokens.image_mask & (positions < tokens.answer_start[:, None])
        prompts = model.prompt_encoder(torch.full((2, 4), NAN), torch.full((2, 0, 2), NAN))
        side = int(config.clip.num_patches ** 0.5)
        expected = model.input_aligner(clip, words, question, prompts, model.prompt_encoder.grid_encoding(side))
    assert expected.shape == (2, 16, config.text.hidden_size)
    torch.testing.assert_close(filled[:, n:], expected)
    torch.testing.assert_close(embeds[~tokens.image_mask], words[~tokens.image_mask])


def test_a_referring_box_changes_the_slot_but_not_the_text(tiny_shared):
    bundle, n = tiny_shared, tiny_shared.config.clip.num_patches
    conversations = [(QUERY, ANSWER)]
    tokens, clip, plain = embed(bundle, conversations)
    boxes = torch.tensor([[0.2, 0.3, 0.6, 0.7]])
    _, _, boxed = embed(bundle, conversations, clip=clip, referring_boxes=boxes)
    _, _, nan_boxed = embed(bundle, conversations, clip=clip, referring_boxes=torch.full((1, 4), NAN),
                            referring_points=torch.full((1, 1, 2), NAN))
    _, _, pointed = embed(bundle, conversations, clip=clip, referring_points=torch.tensor([[[0.4, 0.5]]]))
    mask = tokens.image_mask
    torch.testing.assert_close(boxed[~mask], plain[~mask])
    torch.testing.assert_close(slot(boxed, mask)[:, :n], slot(plain, mask)[:, :n])
    assert not torch.allclose(slot(boxed, mask)[:, n:], slot(plain, mask)[:, n:])
    assert not torch.allclose(slot(pointed, mask)[:, n:], slot(plain, mask)[:, n:])
    torch.testing.assert_close(nan_boxed, plain)  # NaN prompts are the same as none


def test_the_answer_does_not_reach_the_aligner_but_the_question_does(tiny_shared):
    bundle, n = tiny_shared, tiny_shared.config.clip.num_patches
    clip = torch.randn(1, n, bundle.config.text.hidden_size, generator=torch.Generator().manual_seed(1)).expand(2, -1, -1)
    answers = [(QUERY, ANSWER), (QUERY, "No, nothing like that is visible in this slice at all.")]
    tokens, _, embeds = embed(bundle, answers, clip=clip)
    assert tokens.answer_start[0] == tokens.answer_start[1]
    filled = slot(embeds, tokens.image_mask)
    torch.testing.assert_close(filled[0], filled[1])
    # without answer_start the whole row is read, so the same pair differs: the check above can fail
    tokens, _, embeds = embed(bundle, answers, clip=clip, answer_start=False)
    filled = slot(embeds, tokens.image_mask)
    assert not torch.allclose(filled[0, n:], filled[1, n:])
    tokens, _, embeds = embed(bundle, [(QUERY, ANSWER), ("where is the spleen?", ANSWER)], clip=clip)
    filled = slot(embeds, tokens.image_mask)
    assert not torch.allclose(filled[0, n:], filled[1, n:])


# -- training with visual prompts ---------------------------------------------------------------
def without_aligner() -> MediSeeConfig:
    config = preset("tiny")
    return dataclasses.replace(config, visual_prompts=dataclasses.replace(config.visual_prompts, aligner=False))


def grad_norm(param: torch.nn.Parameter) -> float:
    return 0.0 if param.grad is None else float(param.grad.abs().sum())


def test_without_the_aligner_the_prompt_tokens_go_to_the_llm_and_train(tiny_tokenizer, phantom):
    config = without_aligner()
    assert preset("tiny").visual_prompts.aligner  # the copy did not change the preset
    vp = config.visual_prompts
    assert config.num_image_slot_tokens == config.clip.num_patches + 2 + vp.max_points
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    assert bundle.model.input_aligner is None and bundle.model.prompt_encoder is not None
    n = config.clip.num_patches
    boxes = torch.tensor([[0.2, 0.3, 0.6, 0.7]])
    tokens, clip, embeds = embed(bundle, [(QUERY, ANSWER)], referring_boxes=boxes)
    assert int(tokens.image_mask.sum()) == n + 3
    with torch.no_grad():
        expected = bundle.model.prompt_encoder(boxes, torch.full((1, 0, 2), NAN))
    torch.testing.assert_close(slot(embeds, tokens.image_mask)[:, n:], expected)

    image, mask, box = phantom
    configure_trainable(bundle.model)
    bundle.model.train()
    sample = TrainingSample(image, QUERY, ANSWER, mask[None], box[None], referring_box=tuple(float(v) for v in box))
    terms = bundle.loss([sample])
    assert torch.isfinite(terms["total"])
    terms["total"].backward()
    encoder = bundle.model.prompt_encoder
    assert grad_norm(encoder.type_embeddings.weight) > 0
    assert grad_norm(encoder.project[0].weight) > 0 and grad_norm(encoder.project[-1].weight) > 0


def test_clicks_go_to_the_first_group_of_their_row():
    clicks = torch.tensor([[[0.2, 0.4]], [[NAN, NAN]], [[0.7, 0.1]]])
    out = clicks_on_first_groups(clicks, torch.tensor([0, 0, 1, 2, 2]))
    torch.testing.assert_close(out[[0, 3]], clicks[[0, 2]])
    assert torch.isnan(out[[1, 2, 4]]).all()
    assert clicks_on_first_groups(torch.full((3, 1, 2), NAN), torch.tensor([0, 1, 2])) is None
    assert clicks_on_first_groups(None, torch.tensor([0])) is None


def test_training_prompts_the_mask_head_with_the_click_as_the_predictor_does(tiny, phantom):
    image, mask, box = phantom
    centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
    plain = TrainingSample(image, QUERY, ANSWER, mask[None], box[None])
    clicked = TrainingSample(image, QUERY, ANSWER, mask[None], box[None], referring_point=centre)
    captured = []
    decode = tiny.model.mask_head.decode
    tiny.model.mask_head.decode = lambda e, s, b, p=None, f=None: (captured.append(p), decode(e, s, b, p, f))[1]
    try:
        with torch.no_grad():
            tiny.loss([plain, clicked])
            tiny.loss([plain])
    finally:
        del tiny.model.mask_head.decode
    points, unclicked = captured
    assert torch.isnan(points[0]).all()
    resized = torch.tensor([256.0, 192.0])  # the phantom's (w, h) in SAM's input pixels
    torch.testing.assert_close(points[1, 0], torch.tensor(centre) * resized)
    assert unclicked is None


def test_with_the_aligner_referring_prompts_train_the_queries_and_type_embeddings(tiny, phantom):
    image, mask, box = phantom
    configure_trainable(tiny.model)
    tiny.model.train()
    centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
    samples = [
        TrainingSample(image, QUERY, ANSWER, mask[None], box[None], referring_box=tuple(float(v) for v in box)),
        TrainingSample(image, QUERY, ANSWER, mask[None], box[None], referring_point=centre),
    ]
    terms = tiny.loss(samples)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    assert grad_norm(tiny.model.input_aligner.queries) > 0
    types = tiny.model.prompt_encoder.type_embeddings.weight.grad
    assert types is not None
    # the box corners, the point and the absent prompts all received gradient
    for kind in (BOX_START, BOX_END, POINT, NOT_A_PROMPT):
        assert float(types[kind].abs().sum()) > 0, kind


def test_referring_tensors_turn_missing_prompts_into_nan(tiny_shared):
    boxes, points = tiny_shared.referring_tensors([(0.1, 0.2, 0.3, 0.4), None], [None, (0.5, 0.6)])
    assert boxes.shape == (2, 4) and points.shape == (2, 1, 2)
    torch.testing.assert_close(boxes[0], torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert torch.isnan(boxes[1]).all() and torch.isnan(points[0]).all()
    torch.testing.assert_close(points[1, 0], torch.tensor([0.5, 0.6]))


def test_the_paper_mode_trains_the_prompt_encoder_and_aligner(tiny):
    names = set(configure_trainable(tiny.model))
    for prefix in ("prompt_encoder.", "input_aligner."):
        params = [n for n, _ in tiny.model.named_parameters() if n.startswith(prefix)]
        assert params and set(params) <= names, prefix
    assert "input_aligner.queries" in names and "prompt_encoder.type_embeddings.weight" in names
    assert not any(n.startswith("mllm.vision_tower.") for n in names)


# -- configs without visual prompts ---------------------------------------------------------------
def test_without_visual_prompts_the_slot_is_only_the_clip_patches(tiny_tokenizer):
    assert preset("medisee-7b").visual_prompts is None
    assert preset("medisee-7b").num_image_slot_tokens == preset("medisee-7b").clip.num_patches == 576
    config = dataclasses.replace(preset("tiny"), visual_prompts=None)
    assert config.num_image_slot_tokens == config.clip.num_patches
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    assert bundle.model.prompt_encoder is None and bundle.model.input_aligner is None
    assert not any(k.startswith(("prompt_encoder.", "input_aligner.")) for k in bundle.model.state_dict())
    tokens, clip, embeds = embed(bundle, [(QUERY, ANSWER)])
    assert int(tokens.image_mask.sum()) == config.clip.num_patches
    torch.testing.assert_close(slot(embeds, tokens.image_mask), clip)
    # a referring prompt has nowhere to go and changes nothing
    _, _, boxed = embed(bundle, [(QUERY, ANSWER)], clip=clip, referring_boxes=torch.tensor([[0.1, 0.1, 0.5, 0.5]]))
    torch.testing.assert_close(boxed, embeds)


def test_visual_prompts_round_trip_through_the_config_dict():
    for config in (preset("tiny"), without_aligner(), preset("medisee-7b"),
                   dataclasses.replace(preset("tiny"), visual_prompts=VisualPromptConfig(max_points=3))):
        data = config.to_dict()
        again = MediSeeConfig.from_dict(data)
        assert again == config and again.to_dict() == data
        assert again.num_image_slot_tokens == config.num_image_slot_tokens
    data = preset("tiny").to_dict()
    data["visual_prompts"]["unknown"] = 1
    with pytest.raises(ValueError, match="VisualPromptConfig"):
        MediSeeConfig.from_dict(data)


# -- the predictor: which entity a drawn prompt marks, and entity names ------------------------------
def test_the_prompt_is_owned_by_the_rows_only_group_or_its_best_overlap():
    rows = torch.tensor([0, 1, 1, 1, 2])
    predicted = torch.tensor([
        [0.0, 0.0, 0.1, 0.1],  # row 0's only group, far from its prompt: still the owner
        [0.0, 0.0, 0.2, 0.2],
        [0.5, 0.5, 0.9, 0.9],  # overlaps row 1's box most
        [0.4, 0.4, 0.6, 0.6],
        [0.1, 0.1, 0.9, 0.9],  # row 2 has no prompt
    ])
    sizes = [(100, 200), (200, 100), (50, 50)]  # (h, w)
    prompts = [PromptInputs(box=(150.0, 80.0, 190.0, 95.0)), PromptInputs(box=(50.0, 100.0, 90.0, 180.0)),
               PromptInputs()]
    assert owner_of_prompt(rows, predicted, prompts, sizes) == {0: 0, 2: 1}
    # the overlap is measured in the row's own normalisation: swapping h and w changes the owner
    # (read as (w, h), row 1's box would be (0.25, 1.0, 0.45, 1.8), overlapping nothing)
    prompts[1] = PromptInputs(box=(10.0, 10.0, 30.0, 30.0))  # (0.05, 0.05, 0.15, 0.15) in a 200 x 100 slice
    assert owner_of_prompt(rows, predicted, prompts, sizes) == {0: 0, 1: 1}


def test_a_clicked_point_is_owned_by_the_nearest_box_centre():
    rows = torch.tensor([0, 0, 0, 1])
    predicted = torch.tensor([
        [0.0, 0.0, 0.2, 0.2],  # centre (0.1, 0.1)
        [0.6, 0.0, 1.0, 0.4],  # centre (0.8, 0.2)
        [0.0, 0.6, 0.4, 1.0],  # centre (0.2, 0.8)
        [0.0, 0.0, 1.0, 1.0],
    ])
    sizes = [(100, 400), (10, 10)]
    near_second = [PromptInputs(point=(300.0, 25.0)), PromptInputs()]  # (0.75, 0.25)
    assert owner_of_prompt(rows, predicted, near_second, sizes) == {1: 0}
    near_third = [PromptInputs(point=(100.0, 70.0)), PromptInputs()]  # (0.25, 0.7)
    assert owner_of_prompt(rows, predicted, near_third, sizes) == {2: 0}
    assert owner_of_prompt(rows, predicted, [PromptInputs(), PromptInputs()], sizes) == {}
    assert owner_of_prompt(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), near_second, sizes) == {}
    # a row with a point but no groups owns nothing; the other row's only group is its owner
    assert owner_of_prompt(torch.tensor([1]), predicted[3:], [PromptInputs(point=(1.0, 1.0)),
                                                                PromptInputs(point=(9.0, 9.0))], sizes) == {0: 1}


def test_entity_phrases_prefer_the_tagged_phrase_then_the_answer_then_the_query():
    query = "what is the structure inside the drawn box on this abdominal CT slice, and is it normal or not?"
    answer = "The marked structure is the left kidney."
    assert entity_phrase(0, ["liver"], answer, query) == "liver"
    assert entity_phrase(0, [], answer, query) == "left kidney"
    assert entity_phrase(0, [""], answer, query) == "left kidney"  # an empty tag names nothing
    assert entity_phrase(0, [], "It is [SEG] and [BBOX].", query) == query[:64]
    assert len(entity_phrase(0, [], "", query)) == 64
    assert entity_phrase(1, ["liver"], answer, query) == f"{query[:56]} #2"
    assert entity_phrase(2, ["liver", "spleen"], answer, "kidney?") == "kidney? #3"
    assert entity_phrase(1, ["liver", "spleen"], answer, query) == "spleen"


def test_grid_encoding_follows_clip_patch_order_and_prompts_map_onto_the_clip_canvas():
    from medisee.model.preprocess import to_clip_frame

    encoder = seeded(VisualPromptEncoder, prompt_config())
    grid = encoder.grid_encoding(4)
    assert grid.shape == (16, prompt_config().embed_dim)
    # token 1 is the first row's second cell: centre (0.375, 0.125)
    torch.testing.assert_close(grid[1], encoder.positional_encoding(torch.tensor([0.375, 0.125])))
    # a 50 x 100 (h x w) image padded to a 100 x 100 square sits in the middle rows
    corners = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(to_clip_frame(corners, (50, 100), 112, True), torch.tensor([[0.0, 0.25], [1.0, 0.75]]))
    torch.testing.assert_close(to_clip_frame(corners, (64, 64), 112, True), corners)
    # resize + centre crop (no padding): the 100-wide image loses 25 px on each side
    torch.testing.assert_close(to_clip_frame(torch.tensor([[0.25, 0.5]]), (50, 100), 50, False), torch.tensor([[0.0, 0.5]]))


def test_region_features_pool_the_box_and_sample_the_point():
    from medisee.model.visual_prompts import region_features

    image = torch.arange(16.0).view(1, 16, 1).repeat(1, 1, 3)  # a 4x4 grid whose tokens hold their index
    coords = torch.tensor([[[0.0, 0.0], [0.5, 0.5], [0.875, 0.125]]])  # box over cells 0, 1, 4, 5; point on cell 3
    out = region_features(image, coords, torch.tensor([[True, True, True]]))
    torch.testing.assert_close(out[0, :, 0], torch.tensor([2.5, 3.0]))
    tiny_box = torch.tensor([[[0.60, 0.60], [0.61, 0.61], [0.5, 0.5]]])  # covers no cell centre: the nearest cell (10)
    assert region_features(image, tiny_box, torch.tensor([[True, True, False]]))[0, :, 0].tolist() == [10.0, 0.0]
    assert region_features(image, coords, torch.tensor([[False, False, True]]))[0, :, 0].tolist() == [0.0, 3.0]
    with pytest.raises(ValueError, match="square grid"):
        region_features(torch.zeros(1, 6, 3), coords, torch.tensor([[True, True, True]]))


def test_prompt_class_weights_pick_the_framed_structure_and_the_finer_of_nested_ones():
    from medisee.model.visual_prompts import PROMPT_SCORE_FLOOR, prompt_class_weights

    side = 8
    probs = torch.zeros(1, side, side, 3)
    probs[0, 1:7, 1:7, 0] = 0.9  # a large organ
    probs[0, 2:4, 2:4, 1] = 0.9  # a small structure inside it (nested: the point on it is on both)
    probs[0, 5:8, 5:8, 2] = 0.9  # a neighbour the box below clips
    flat = probs.flatten(1, 2)
    box = torch.tensor([[[2 / 8, 2 / 8], [4 / 8, 4 / 8], [3 / 8, 3 / 8]]])  # frames the small one; point on it
    weights = prompt_class_weights(flat, box, torch.tensor([[True, True, True]]))
    assert weights[0, 0].argmax() == 1 and weights[0, 1].argmax() == 1
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2))
    big = torch.tensor([[[1 / 8, 1 / 8], [7 / 8, 7 / 8], [NAN, NAN]]])  # frames the organ, clips the neighbour
    weights = prompt_class_weights(flat, big, torch.tensor([[True, True, False]]))
    assert weights[0, 0].argmax() == 0 and weights[0, 1].abs().sum() == 0  # no point: zeros
    empty = torch.full((1, side * side, 3), 0.001)  # nothing clearly marked: scores divided by the floor
    weights = prompt_class_weights(empty, box, torch.tensor([[True, True, True]]))
    point_scores = torch.full((3,), 0.001 * (1 - 0.001))
    torch.testing.assert_close(weights[0, 1], point_scores / PROMPT_SCORE_FLOOR)


def test_region_tokens_join_the_slot_and_read_only_the_image_under_the_prompt(tiny_tokenizer):
    config = dataclasses.replace(preset("tiny"), visual_prompts=dataclasses.replace(
        preset("tiny").visual_prompts, region_features=True))
    vp = config.visual_prompts
    assert config.num_image_slot_tokens == config.clip.num_patches + vp.num_queries + 1 + vp.max_points
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    n, side = config.clip.num_patches, int(config.clip.num_patches ** 0.5)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [NAN] * 4])  # square image: the CLIP frame is the image frame
    tokens, clip, embeds = embed(bundle, [(QUERY, ANSWER)] * 2, referring_boxes=boxes)
    region = slot(embeds, tokens.image_mask)[:, n + vp.num_queries :]
    cells = torch.arange(n).view(side, side)[: side // 2, : side // 2].flatten()
    torch.testing.assert_close(region[0, 0], clip[0, cells].mean(0))  # the box: the mean patch inside it
    assert region[0, 1:].abs().sum() == 0 and region[1].abs().sum() == 0  # no point, no box: zero tokens


# -- visual tags (ours) -----------------------------------------------------------------------
def tagged_config() -> MediSeeConfig:
    return dataclasses.replace(preset("tiny"), patch_classes=("liver", "left kidney"), visual_tags=True)


def test_visual_tags_need_the_patch_head_and_end_the_slot():
    with pytest.raises(ValueError, match="visual_tags needs patch_classes"):
        dataclasses.replace(preset("tiny"), visual_tags=True)
    config = tagged_config()
    vp = config.visual_prompts
    assert config.num_tag_tokens == 2 + 1 + vp.max_points
    assert config.num_image_slot_tokens == config.clip.num_patches + vp.num_slot_tokens + config.num_tag_tokens


def test_visual_tags_are_the_class_names_mixed_by_the_patch_heads_probabilities(tiny_tokenizer):
    config = tagged_config()
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    model = bundle.model
    embed = model.mllm.language_model.get_input_embeddings()

    def word(text: str) -> torch.Tensor:
        return embed(torch.tensor(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])).mean(0)

    liver, kidney, no = word("liver"), word("left kidney"), word("No")
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.6], [NAN] * 4])
    side = config.sam.embedding_size
    probs = torch.zeros(2, side, side, 2)  # per image cell: liver 0.8 inside the box's cells, left kidney 0.1
    inside = slice(round(0.1 * side), round(0.6 * side))
    probs[:, inside, inside, 0] = 0.8
    probs[..., 1] = 0.1
    tokens, clip, embeds = embed_rows(bundle, boxes, probs.flatten(1, 2))
    tags = slot(embeds, tokens.image_mask)[:, -config.num_tag_tokens:]
    with torch.no_grad():
        torch.testing.assert_close(tags[0, 0], 0.8 * liver + 0.2 * no)
        torch.testing.assert_close(tags[0, 1], 0.1 * kidney + 0.9 * no)
        # what the box marks: liver fills 0.8 of it and lies wholly inside (0.8 * 1 ** 2); the
        # kidney fills 0.1 of it and the box holds a quarter of it (0.1 * 0.25 ** 2)
        scores = torch.tensor([0.8, 0.1 * 0.25**2])
        weights = scores / scores.sum()
        torch.testing.assert_close(tags[0, 2], weights[0] * liver + weights[1] * kidney)
        assert tags[0, 3].abs().sum() == 0 and tags[1, 2:].abs().sum() == 0  # no point, no box
        torch.testing.assert_close(tags[1, :2], tags[0, :2])  # the slice's tags do not depend on the prompt
    with pytest.raises(ValueError, match="patch head's probabilities"):
        embed_rows(bundle, boxes, None)
    model.tag_word_ids = torch.zeros(0, 1, dtype=torch.long)
    with pytest.raises(RuntimeError, match="need their words"):
        embed_rows(bundle, boxes, probs.flatten(1, 2))


def test_visual_tags_read_the_patch_heads_probabilities_of_the_image(tiny_tokenizer, phantom):
    """The forward pass feeds the tags from the patch head on the mask head's embedding."""
    bundle = build_random(tagged_config(), seed=0, tokenizer=tiny_tokenizer)
    model = bundle.model
    image = phantom[0]
    with torch.no_grad():
        encoding = bundle.encode_images([image])
        probs = model.patch_probabilities(encoding)
        last = model.patch_head[-1]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor([0.8, 0.1])))
        torch.testing.assert_close(model.patch_probabilities(encoding), torch.tensor([0.8, 0.1]).expand_as(probs))
        tokens = bundle.tokenize([(QUERY, ANSWER)])
        fwd = model(encoding, tokens.input_ids, tokens.attention_mask, tokens.image_mask, answer_start=tokens.answer_start)
        direct = model.embed_inputs(encoding.clip, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                                    tokens.answer_start, image_sizes=encoding.original,
                                    patch_probs=model.patch_probabilities(encoding))
        again = model.mllm.hidden_states(direct, tokens.attention_mask)
    torch.testing.assert_close(fwd.hidden, again)


def embed_rows(bundle, boxes, probs):
    return embed(bundle, [(QUERY, ANSWER)] * len(boxes), referring_boxes=boxes, patch_probs=probs)


def test_a_structure_named_twice_gives_two_distinct_entity_names():
    assert distinct_name("right lung", []) == "right lung"
    assert distinct_name("right lung", ["right lung"]) == "right lung #2"
    assert distinct_name("right lung", ["right lung", "right lung #2", "liver"]) == "right lung #3"
    assert distinct_name("liver", ["right lung"]) == "liver"

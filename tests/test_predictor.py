"""The predictor: embedding cache, batching, both modes, thresholds and input checks."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from medisee.builder import build_random
from medisee.config import preset
from medisee.models import load_model
from medisee.predictor import (
    EmbeddingCache,
    PredictionInputError,
    Predictor,
    PromptInputs,
    grounding_scores,
    mention_position,
    named_opening,
)

QUERY = "which organ filters the blood?"


def count_encoder_calls(bundle) -> dict[str, int]:
    calls = {"sam": 0, "clip": 0}
    bundle.model.mask_head.sam.vision_encoder.register_forward_hook(lambda *a: calls.__setitem__("sam", calls["sam"] + 1))
    bundle.model.mllm.vision_tower.embeddings.register_forward_hook(lambda *a: calls.__setitem__("clip", calls["clip"] + 1))
    return calls


def test_second_query_on_a_slice_skips_the_image_encoders(tiny, phantom):
    calls = count_encoder_calls(tiny)
    predictor = Predictor(tiny, score_threshold=0.0)
    image = phantom[0]
    first = predictor.predict(image, QUERY, mode="fast")
    assert calls == {"sam": 1, "clip": 1}
    second = predictor.predict(image, "where is the spleen?", mode="fast")
    third = predictor.predict(image.copy(), QUERY, mode="fast")  # same pixels, new array
    assert calls == {"sam": 1, "clip": 1}
    assert predictor.cache.hits == 2 and predictor.cache.misses == 1
    np.testing.assert_array_equal(first.entities[0].mask, third.entities[0].mask)
    assert second.entities  # the cached encoding still answers a new question
    predictor.predict(255 - image, QUERY, mode="fast")
    assert calls == {"sam": 2, "clip": 2}


def test_cache_evicts_least_recently_used():
    cache = EmbeddingCache(capacity=2)
    cache.put("a", 1), cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3


def test_batched_volume_matches_slice_by_slice(tiny_shared):
    rng = np.random.default_rng(1)
    volume = (rng.random((5, 48, 64)) * 255).astype(np.uint8)
    batched = Predictor(tiny_shared, score_threshold=0.0, batch_size=4, cache_size=0)
    single = Predictor(tiny_shared, score_threshold=0.0, batch_size=1, cache_size=0)
    seen = []
    many = batched.predict_volume(volume, QUERY, mode="fast", progress=lambda d, t: seen.append((d, t)))
    ones = single.predict_volume(volume, QUERY, mode="fast")
    assert seen == [(4, 5), (5, 5)]
    assert [p.slice_index for p in many] == list(range(5))
    for a, b in zip(many, ones):
        assert len(a.entities) == len(b.entities) == 1
        agreement = (a.entities[0].mask == b.entities[0].mask).mean()
        assert agreement > 0.999
        np.testing.assert_allclose(a.entities[0].box, b.entities[0].box, atol=1e-3)
        assert a.entities[0].score == pytest.approx(b.entities[0].score, abs=1e-4)


def test_scores_below_threshold_mean_no_target_found(tiny_shared, phantom):
    """The untrained model gives the grounding token a tiny probability: an honest
    'nothing found' instead of a forced mask."""
    image = phantom[0]
    loose = Predictor(tiny_shared, score_threshold=0.0).predict(image, QUERY, mode="fast")
    assert len(loose.entities) == 1
    score = loose.entities[0].score
    assert 0 < score < 1
    assert Predictor(tiny_shared, score_threshold=score * 1.01).predict(image, QUERY, mode="fast").entities == []
    assert len(Predictor(tiny_shared, score_threshold=score * 0.99).predict(image, QUERY, mode="fast").entities) == 1


def test_the_box_comes_from_the_decoder_or_from_the_mask(tiny, phantom):
    from medisee.metrics import mask_to_box

    image = phantom[0]
    decoded = Predictor(tiny, score_threshold=0.0).predict(image, QUERY, mode="fast").entities[0]
    tiny.config.box_source = "mask"
    try:
        from_mask = Predictor(tiny, score_threshold=0.0).predict(image, QUERY, mode="fast").entities[0]
    finally:
        tiny.config.box_source = "decoder"
    np.testing.assert_array_equal(from_mask.mask, decoded.mask)  # the mask itself does not change
    assert from_mask.box == mask_to_box(decoded.mask) != decoded.box
    with pytest.raises(ValueError, match="box_source must be one of decoder, mask"):
        type(tiny.config)(box_source="pixels")


@contextmanager
def answering(bundle, text: str, given: int = 0):
    """The language model writes ``text`` (then the end token) whatever it reads, less its
    first ``given`` tokens (an opening the predictor gives)."""
    script = bundle.tokenizer(text, add_special_tokens=False).input_ids + [bundle.tokenizer.eos_token_id]
    script = script[given:]
    lm = bundle.model.mllm.language_model
    steps = {"i": 0}

    def forced_head(hidden):
        logits = torch.full((*hidden.shape[:-1], lm.config.vocab_size), -1e4)
        logits[..., script[min(steps["i"], len(script) - 1)]] = 1e4
        steps["i"] += 1
        return logits

    original = lm.lm_head.forward
    lm.lm_head.forward = forced_head
    try:
        yield
    finally:
        lm.lm_head.forward = original


def test_full_mode_grounds_generated_candidate_tokens(tiny, phantom):
    """Make the language model emit the answer prefix, then check that generation finds the
    group and grounds it with the state that predicted [SEG]."""
    bundle = tiny
    with answering(bundle, " Sure, it is [SEG] and [BBOX]."):
        result = Predictor(bundle, score_threshold=0.5).predict(phantom[0], QUERY, mode="full")
    assert "[SEG]" in result.raw_answer and "[BBOX]" in result.raw_answer
    assert len(result.entities) == 1
    entity = result.entities[0]
    assert entity.score == pytest.approx(1.0)
    assert entity.phrase == QUERY  # no <p>..</p> phrase: the question names the entity
    assert entity.mask.shape == phantom[0].shape
    x0, y0, x1, y1 = entity.box
    assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 96


def test_shared_opening_is_the_longest_common_token_prefix(tiny):
    prompts = tiny.prompts
    answers = ["Sure, <p>liver</p> [SEG].", "Sure, <p>spleen</p> [SEG]."]
    shared = prompts.shared_opening(answers)
    assert 0 < len(shared) < len(prompts.answer_ids(answers[0]))
    for answer in answers:
        assert prompts.answer_ids(answer)[: len(shared)] == shared
    assert len({prompts.answer_ids(a)[len(shared)] for a in answers}) == 2  # no longer prefix is shared
    assert "Sure," in tiny.tokenizer.decode(shared)


def test_a_drawn_prompt_opens_the_answer_with_the_marked_structures_group(tiny, phantom):
    """With a box or click the answer is given the opening every named answer shares and
    the model writes the rest: the group names the entity, and only generated tokens make
    its score (the given opening is not the model's choice)."""
    given = len(named_opening(tiny))
    with answering(tiny, " Sure, <p>liver</p> [SEG] and [BBOX]. It filters the blood.", given):
        boxed = Predictor(tiny, score_threshold=0.5).predict(phantom[0], QUERY, mode="full", box=(10, 10, 100, 80))
    assert boxed.raw_answer.startswith("Sure, <p>liver</p> [SEG] and [BBOX].")
    assert boxed.answer == "liver. It filters the blood."
    assert [e.phrase for e in boxed.entities] == ["liver"]
    assert boxed.entities[0].score == pytest.approx(1.0)
    with answering(tiny, " Sure, <p>spleen</p> [SEG] and [BBOX].", given):
        clicked = Predictor(tiny, score_threshold=0.5).predict(phantom[0], QUERY, mode="full", point=(80, 40))
    assert [e.phrase for e in clicked.entities] == ["spleen"]


def test_the_opening_stops_before_the_name_whatever_the_patch_classes(tiny_tokenizer, phantom):
    """A patch head of one structure must not make that structure's whole answer the opening."""
    one = build_random(dataclasses.replace(preset("tiny"), patch_classes=("liver",)), seed=0, tokenizer=tiny_tokenizer)
    with answering(one, " Sure, <p>spleen</p> [SEG] and [BBOX].", len(named_opening(one))):
        result = Predictor(one, score_threshold=0.0).predict(phantom[0], QUERY, mode="full", box=(10, 10, 100, 80))
    assert [e.phrase for e in result.entities] == ["spleen"]


def test_models_without_the_visual_prompt_encoder_answer_a_box_freely(tiny_tokenizer, phantom):
    """The box only prompts the mask head of a model that never learned the named form."""
    plain = build_random(dataclasses.replace(preset("tiny"), visual_prompts=None), seed=0, tokenizer=tiny_tokenizer)
    with answering(plain, " Sure, it is [SEG] and [BBOX]."):
        result = Predictor(plain, score_threshold=0.5).predict(phantom[0], QUERY, mode="full", box=(10, 10, 100, 80))
    assert result.raw_answer.startswith("Sure, it is [SEG]")
    assert [e.phrase for e in result.entities] == [QUERY]


def test_the_shipped_tokenizer_gives_prompted_answers_their_tag_and_leaves_the_name_to_the_model():
    from medisee.models import load_model

    bundle = load_model("default").bundle
    assert bundle.tokenizer.decode(named_opening(bundle)).strip() == "Sure, <p>"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": "   "}, "the query is empty"),
        ({"query": "x" * 2001}, "the limit is 2000"),
        ({"box": (0, 0, 200, 50)}, "lies outside the image"),
        ({"box": (50, 10, 20, 40)}, "is empty"),
        ({"box": (1, 2, 3)}, "needs 4 numbers"),
        ({"point": (-1, 5)}, "lies outside the image"),
        ({"mode": "slow"}, "unknown mode"),
    ],
)
def test_bad_requests_get_clear_errors(tiny_shared, phantom, kwargs, message):
    args = {"image": phantom[0], "query": QUERY} | kwargs
    with pytest.raises(PredictionInputError, match=message):
        Predictor(tiny_shared).predict(**args)


def test_bad_images_and_slices_get_clear_errors(tiny_shared):
    predictor = Predictor(tiny_shared)
    with pytest.raises(PredictionInputError, match="expected a 2D image"):
        predictor.predict(np.zeros((4, 4, 4, 4), np.uint8), QUERY)
    with pytest.raises(PredictionInputError, match="uint8"):
        predictor.predict(np.zeros((8, 8), np.float32), QUERY)
    with pytest.raises(PredictionInputError, match="slice 7 out of range"):
        predictor.predict_volume(np.zeros((3, 8, 8), np.uint8), QUERY, slice_indices=[7])


def test_grounding_score_is_the_probability_of_the_answer_up_to_each_group():
    probs = torch.tensor([[0.0, 0.0, 0.9, 0.5, 0.8, 1.0, 0.5, 0.4, 1.0]])
    # answer starts at 2; group 1 = tokens at 4 and 5, group 2 = tokens at 7 and 8
    scores = grounding_scores(probs, torch.tensor([0, 0]), torch.tensor([[4, 5], [7, 8]]), torch.tensor([2]))
    torch.testing.assert_close(scores, torch.tensor([0.9 * 0.5 * 0.8, 0.5 * 0.4]))


@pytest.fixture
def gated(tiny_tokenizer):
    """A tiny model whose patch head knows two structures and checks their presence; the
    head's probabilities are set by the test (``seen``)."""
    config = dataclasses.replace(preset("tiny"), patch_classes=("liver", "spleen"), presence_gate=True)
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    seen = {"liver": 1.0, "spleen": 1.0}

    def patch_probabilities(images):
        cells = images.sam.shape[-1] * images.sam.shape[-2]
        values = torch.tensor([seen["liver"], seen["spleen"]])
        return values.expand(len(images.original), cells, 2).clone()

    bundle.model.patch_probabilities = patch_probabilities
    return bundle, seen


def test_fast_mode_scores_are_weighed_by_the_presence_of_the_structure_meant(gated, phantom):
    bundle, seen = gated

    def score() -> float:
        entities = Predictor(bundle, score_threshold=0.0, cache_size=0).predict(phantom[0], QUERY, mode="fast").entities
        return entities[0].score if entities else 0.0

    both = score()
    bundle.config.presence_gate = False
    unchecked = score()
    bundle.config.presence_gate = True
    assert both == pytest.approx(unchecked, rel=1e-5)  # every structure seen: the answer alone decides
    seen.update(liver=1.0, spleen=0.0)
    only_liver = score()
    seen.update(liver=0.0, spleen=1.0)
    only_spleen = score()
    # the two structures share the model's belief about which one it means
    assert 0 < only_liver < unchecked and 0 < only_spleen < unchecked
    assert only_liver + only_spleen == pytest.approx(unchecked, rel=1e-4)
    seen.update(liver=0.0, spleen=0.0)
    assert score() == 0.0


def test_answers_already_below_the_threshold_skip_the_presence_check(gated, phantom, monkeypatch):
    bundle, _ = gated
    unchecked = Predictor(bundle, score_threshold=0.0).predict(phantom[0], QUERY, mode="fast").entities[0].score
    calls = []
    original = bundle.model.mllm.continuation_log_probs
    monkeypatch.setattr(bundle.model.mllm, "continuation_log_probs", lambda *a: calls.append(1) or original(*a))
    assert Predictor(bundle, score_threshold=unchecked * 1.01).predict(phantom[0], QUERY, mode="fast").entities == []
    assert calls == []
    assert Predictor(bundle, score_threshold=unchecked * 0.5).predict(phantom[0], QUERY, mode="fast").entities
    assert calls == [1]


def test_full_mode_checks_the_structure_each_group_names(gated, phantom):
    bundle, seen = gated
    seen.update(liver=0.25, spleen=0.0)
    with answering(bundle, " Sure, <p>liver</p> [SEG] and [BBOX], <p>aorta</p> [SEG] and [BBOX]."):
        result = Predictor(bundle, score_threshold=0.0).predict(phantom[0], QUERY, mode="full")
    scores = {e.phrase: e.score for e in result.entities}
    assert scores == {"liver": pytest.approx(0.25), "aorta": pytest.approx(1.0)}  # aorta: not a patch class


def test_the_presence_check_needs_a_patch_head():
    with pytest.raises(ValueError, match="presence_gate needs patch_classes"):
        type(preset("tiny"))(presence_gate=True)


# -- query tags: fast mode names what is asked, the query gate, several structures ------------
@pytest.fixture
def queried(tiny_tokenizer):
    """A tiny model with query tags and the query gate; how surely the question asks for each
    structure is set by the test (``asked``), the patch head sees both everywhere."""
    config = dataclasses.replace(preset("tiny"), patch_classes=("liver", "spleen"), query_tags=True, query_gate=True)
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    asked = {"liver": 0.0, "spleen": 0.0}
    bundle.asked_structures = lambda query: dict(asked)
    return bundle, asked


def preferring(predictor: Predictor, monkeypatch, named: bool) -> None:
    """Make the model find the named answer form (or the one-entity opening) the likelier."""
    real = predictor._teacher_force

    def scripted(encoding, query, prompts, answers, given_names=False):
        rows, states, scores = real(encoding, query, prompts, answers, given_names)
        return rows, states, torch.full_like(scores, 0.9 if ("<p>" in answers[0]) == named else 0.1)

    monkeypatch.setattr(predictor, "_teacher_force", scripted)


def test_fast_mode_takes_the_answer_form_the_model_finds_likelier(queried, phantom, monkeypatch):
    bundle, asked = queried
    asked.update(liver=0.9)
    predictor = Predictor(bundle, score_threshold=0.0)
    preferring(predictor, monkeypatch, named=True)
    assert [e.phrase for e in predictor.predict(phantom[0], "segment the liver", mode="fast").entities] == ["liver"]
    boxed = predictor.predict(phantom[0], "segment the liver", mode="fast", box=(60, 20, 100, 60))
    # a drawn box asks about what it marks: named for the structure the model means there, not the query
    assert [e.phrase in bundle.config.patch_classes for e in boxed.entities] == [True]
    preferring(predictor, monkeypatch, named=False)  # the one-entity opening, named for the structure meant
    assert [e.phrase in bundle.config.patch_classes
            for e in predictor.predict(phantom[0], "segment the liver", mode="fast").entities] == [True]
    asked.update(spleen=0.8)  # several structures: the same choice, the named form's opening against the other
    assert [e.phrase in bundle.config.patch_classes
            for e in predictor.predict(phantom[0], "liver and spleen", mode="fast").entities] == [True]
    preferring(predictor, monkeypatch, named=True)
    assert [e.phrase for e in predictor.predict(phantom[0], "liver and spleen", mode="fast").entities] == [
        "liver", "spleen"]


def test_several_structures_asked_for_are_scored_by_the_answers_opening(queried, phantom):
    bundle, _ = queried
    predictor = Predictor(bundle, score_threshold=0.0)
    encoding, query = predictor._encode([phantom[0]]), "liver and spleen"
    answer = "Sure, <p>liver</p> [SEG] and [BBOX], <p>spleen</p> [SEG] and [BBOX]."
    rows, _, scores = predictor._teacher_force(encoding, query, [PromptInputs()], [answer], given_names=True)
    tokens = bundle.tokenize([(query, answer)])
    with torch.no_grad():
        hidden = bundle.model.mllm.hidden_states(predictor._embed(encoding, tokens, query, [PromptInputs()]),
                                                 tokens.attention_mask)
    probs = predictor._teacher_forced_probabilities(hidden, tokens.input_ids)[0]
    start = int(tokens.answer_start[0])
    opening = probs[start: start + len(named_opening(bundle))].prod().item()
    assert rows.tolist() == [0, 0] and scores.tolist() == pytest.approx([opening, opening], rel=1e-4)


def test_fast_mode_offers_the_named_form_only_for_what_the_query_head_is_sure_of(queried, phantom):
    bundle, asked = queried
    asked.update(liver=0.9, spleen=0.2)
    predictor = Predictor(bundle, score_threshold=0.0)
    forms = []
    real = predictor._teacher_force
    predictor._teacher_force = lambda e, q, p, answers, given_names=False: forms.append(answers[0]) or real(
        e, q, p, answers, given_names)
    predictor.predict(phantom[0], "segment the liver", mode="fast")
    assert forms == ["Sure, it is [SEG] and [BBOX].", "Sure, <p>liver</p> [SEG] and [BBOX]."]
    asked.update(liver=0.3)
    forms.clear()
    predictor.predict(phantom[0], "which organ?", mode="fast")
    assert forms == ["Sure, it is [SEG] and [BBOX]."]


def test_the_query_gate_weighs_each_named_group_by_how_surely_the_question_asks_for_it(queried, phantom,
                                                                                         monkeypatch):
    bundle, asked = queried
    asked.update(liver=0.9, spleen=0.6)

    def scores() -> dict[str, float]:
        predictor = Predictor(bundle, score_threshold=0.0)
        preferring(predictor, monkeypatch, named=True)
        return {e.phrase: e.score for e in predictor.predict(phantom[0], "liver and spleen", mode="fast").entities}

    gated = scores()
    bundle.config.query_gate = False
    plain = scores()
    assert gated["liver"] == pytest.approx(0.9 * plain["liver"], rel=1e-4)
    assert gated["spleen"] == pytest.approx(0.6 * plain["spleen"], rel=1e-4)


def test_full_mode_answers_a_request_for_several_structures_with_the_groups_that_pass(queried, phantom, monkeypatch):
    bundle, asked = queried
    asked.update(liver=0.9, spleen=0.7)
    predictor = Predictor(bundle, score_threshold=0.0)
    preferring(predictor, monkeypatch, named=True)
    found = predictor.predict(phantom[0], "liver and spleen", mode="full")
    assert [e.phrase for e in found.entities] == ["liver", "spleen"]
    assert found.raw_answer == "Sure, <p>liver</p> [SEG] and [BBOX], <p>spleen</p> [SEG] and [BBOX]."
    predictor.score_threshold = 1.0
    none = predictor.predict(phantom[0], "liver and spleen", mode="full")
    assert none.entities == [] and none.answer.startswith("No, there is no liver and spleen")


def test_a_structure_only_the_answers_text_names_is_weighed_by_the_query_head_more_softly(queried, phantom):
    bundle, asked = queried
    asked.update(liver=0.25)

    def score(answer: str) -> float:
        with answering(bundle, answer):
            return Predictor(bundle, score_threshold=0.0).predict(phantom[0], QUERY, mode="full").entities[0].score

    in_text, in_group = " Sure, it is [SEG] and [BBOX]. The liver filters blood.", " Sure, <p>liver</p> [SEG] and [BBOX]."
    gated = score(in_text), score(in_group)
    bundle.config.query_gate = False
    plain = score(in_text), score(in_group)
    assert gated[0] == pytest.approx(0.5 * plain[0], rel=1e-4)  # the square root of 0.25
    assert gated[1] == pytest.approx(0.25 * plain[1], rel=1e-4)


def test_fast_mode_leaves_the_structure_an_unnamed_group_means_to_the_language_model(queried, phantom):
    bundle, asked = queried
    asked.update(liver=0.25, spleen=0.25)  # neither sure enough for the named form

    def score() -> float:
        return Predictor(bundle, score_threshold=0.0).predict(phantom[0], QUERY, mode="fast").entities[0].score

    gated = score()
    bundle.config.query_gate = False
    assert gated == pytest.approx(score(), rel=1e-4)


def test_a_structure_named_twice_is_one_entity_and_said_once(tiny, phantom):
    with answering(tiny, " Sure, <p>liver</p> [SEG] and [BBOX], <p>liver</p> [SEG] and [BBOX]."):
        result = Predictor(tiny, score_threshold=0.0).predict(phantom[0], QUERY, mode="full")
    assert [e.phrase for e in result.entities] == ["liver"] and result.answer == "liver."


def test_both_sides_of_a_paired_structure_are_asked_for_by_its_plural(tiny_tokenizer):
    config = dataclasses.replace(preset("tiny"), patch_classes=("left lung", "right lung", "heart"), query_tags=True,
                                 query_gate=True)
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    asked = {"left lung": 0.25, "right lung": 0.45, "heart": 0.0}
    bundle.asked_structures = lambda query: dict(asked)
    predictor = Predictor(bundle)
    assert predictor.asked("show me the lungs") == ["left lung", "right lung"]
    assert predictor.asked("segment both lungs") == ["left lung", "right lung"]
    assert predictor.asked("show me the lung") == []  # one side, and the head is unsure which
    asked.update({"left lung": 0.1, "right lung": 0.1, "heart": 0.9})
    assert predictor.asked("the organ between the lungs") == ["heart"]  # the head does not lean to the lungs


def test_the_query_gate_needs_query_tags():
    with pytest.raises(ValueError, match="query_gate needs query_tags"):
        dataclasses.replace(preset("tiny"), patch_classes=("liver",), query_gate=True)


def test_generation_never_says_a_word_twice_back_to_back(tiny, phantom):
    with answering(tiny, " Sure, it is [SEG] and [BBOX]. The liver liver is large."):
        result = Predictor(tiny, score_threshold=0.0).predict(phantom[0], QUERY, mode="full")
    assert "liver liver" not in result.answer and "The liver" in result.answer


def test_structures_asked_for_are_answered_in_the_order_the_query_names_them():
    assert mention_position("Please segment the spleen and the liver.", "spleen") < mention_position(
        "Please segment the spleen and the liver.", "liver")
    assert mention_position("L kidney and liver", "left kidney") == 0  # an informal name counts
    assert mention_position("which organ makes bile?", "liver") == len("which organ makes bile?") + 1


def test_the_patch_heads_probabilities_are_computed_once_per_slice_and_cached(phantom):
    """Every question about a slice reads the patch head's view of it (visual tags, presence
    gates, key slices): the encoding keeps it instead of running the head again."""
    bundle = load_model("default").bundle
    calls = []
    hook = bundle.model.patch_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        predictor = Predictor(bundle)
        image = phantom[0]
        encoding = predictor.encode([image])
        assert len(calls) == 1
        expected = torch.sigmoid(bundle.model.patch_logits(encoding.sam, encoding.resized))
        torch.testing.assert_close(encoding.patch_probs, expected)
        for query in ("Segment the liver.", "which organ filters the blood?"):
            predictor.predict(image, query, mode="full")
            predictor.predict(image, query, mode="fast")
        assert len(calls) == 2  # the check above, no more
        assert torch.equal(encoding.select([0]).patch_probs, encoding.patch_probs)
    finally:
        hook.remove()

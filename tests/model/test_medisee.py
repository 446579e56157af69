"""The composed model: component shapes, candidate-state selection, trainable sets and
that the full objective can be minimised."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from medisee.builder import build_random
from medisee.config import preset
from medisee.losses import combine
from medisee.model import TrainingSample
from medisee.model.medisee import mask_stability
from medisee.model.preprocess import structure_coverage
from medisee.model.trainable import FULLY_TRAINED, configure_trainable, train_only

QUERY = "which organ filters the blood?"
ANSWER = "Sure, it is [SEG] and [BBOX]. The kidney filters blood."


def test_component_shapes(tiny_shared, phantom):
    bundle, config = tiny_shared, tiny_shared.config
    image, _, _ = phantom
    with torch.no_grad():
        enc = bundle.encode_images([image, image])
        e = config.sam.embedding_size
        assert enc.sam.shape == (2, config.sam.prompt_dim, e, e)
        assert enc.clip.shape == (2, config.clip.num_patches, config.text.hidden_size)
        assert enc.resized == [(192, 256), (192, 256)] and enc.original == [(96, 128), (96, 128)]
        tokens = bundle.tokenize([(QUERY, ANSWER), (QUERY, ANSWER)])
        assert int(tokens.image_mask.sum(1)[0]) == config.clip.num_patches + config.visual_prompts.num_queries
        fwd = bundle.model(enc, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                           answer_start=tokens.answer_start)
    out = fwd.outputs
    assert fwd.hidden.shape == (*tokens.input_ids.shape, config.text.hidden_size)
    assert len(fwd.groups) == 2 and out.seg_embeddings.shape == (2, config.sam.prompt_dim)
    assert out.boxes.shape == (2, 4) and out.router_seg_weights.shape == (2, 2)
    torch.testing.assert_close(out.router_seg_weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(out.router_box_weights.sum(-1), torch.ones(2))
    assert [m.shape for m in out.mask_logits] == [(96, 128), (96, 128)]
    assert out.mask_quality.shape == (2,)


def test_candidate_states_are_the_states_just_before_each_token(tiny_shared):
    model = tiny_shared.model
    seg, box = model.candidate_token_ids
    ids = torch.tensor([[5, 6, seg, 7, box, 8, seg, 9, box], [5, seg, 6, 6, 6, 6, 6, 6, 6]])
    groups = model.find_groups(ids)
    assert groups.rows.tolist() == [0, 0]  # row 1 has no [BBOX]: no complete group
    assert groups.positions.tolist() == [[2, 4], [6, 8]]
    hidden = torch.randn(2, 9, model.config.text.hidden_size)
    routed = []
    model.decode_candidate_states = lambda states: routed.append(states)  # capture the input
    try:
        model.decode_groups(hidden, groups)
    finally:
        del model.decode_candidate_states
    torch.testing.assert_close(routed[0][0], torch.stack([hidden[0, 1], hidden[0, 3]]))
    assert model.find_groups(ids, start=torch.tensor([5, 0])).positions.tolist() == [[6, 8]]


def test_box_prompt_follows_the_resize_of_non_square_images(tiny_shared, phantom):
    """The reference scales the box by the square input size on both axes; we map it
    through the image's own resize so a box covering the image covers the resized image."""
    bundle = tiny_shared
    image, _, _ = phantom  # 96 x 128 -> resized 192 x 256 in a 256 frame
    captured = {}
    decode = bundle.model.mask_head.decode

    def spy(embeddings, seg, boxes, points=None, fine=None):
        captured["boxes"] = boxes
        return decode(embeddings, seg, boxes, points, fine)

    bundle.model.mask_head.decode = spy
    try:
        with torch.no_grad():
            enc = bundle.encode_images([image])
            out = bundle.model.decode_candidate_states(torch.randn(1, 2, bundle.config.text.hidden_size))
            bundle.model.predict_masks(enc, torch.tensor([0]), out, prompt_boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    finally:
        del bundle.model.mask_head.decode
    torch.testing.assert_close(captured["boxes"], torch.tensor([[0.0, 0.0, 256.0, 192.0]]))


def test_lora_sits_only_on_the_language_models_q_and_v(tiny_shared):
    names = [n for n, _ in tiny_shared.model.named_parameters() if "lora_" in n]
    layers = tiny_shared.config.text.num_hidden_layers
    assert len(names) == layers * 2 * 2
    assert all(n.startswith("mllm.language_model.model.layers.") for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj"}


def test_trainable_set_follows_the_paper(tiny):
    names = configure_trainable(tiny.model)
    assert names and all("lora_" in n or n.startswith(FULLY_TRAINED) for n in names)
    frozen = {n for n, p in tiny.model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("mllm.vision_tower.") for n in frozen)
    assert any(n.startswith("mllm.mm_projector.") for n in frozen)
    assert any(n.startswith("mask_head.sam.vision_encoder.") for n in frozen)
    assert any(n.startswith("mask_head.sam.prompt_encoder.") for n in frozen)
    assert any(n.endswith("q_proj.base_layer.weight") for n in frozen)
    for prefix in ("router_seg.", "router_box.", "bbox_decoder.", "text_hidden_fcs.", "mask_head.sam.mask_decoder."):
        assert any(n.startswith(prefix) for n in names), prefix
    everything = configure_trainable(tiny.model, train_encoders=True)
    fixed = [n for n, _ in tiny.model.named_parameters() if n not in everything]
    assert fixed == ["mask_head.sam.shared_image_embedding.positional_embedding"]  # a fixed buffer in SAM


def test_loss_terms_and_degenerate_target_boxes_keep_gradients(tiny, phantom):
    image, mask, box = phantom
    configure_trainable(tiny.model)
    tiny.model.train()
    flat = np.array([box[0], box[1], box[0], box[3]], dtype=np.float32)  # zero-width target box
    sample = TrainingSample(image, QUERY, ANSWER, mask[None], flat[None], plain_query="kidney")
    terms = tiny.loss([sample])
    assert set(terms) == {"ce", "bce", "dice", "l1", "giou", "js", "mse", "total"}
    assert all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    grad = tiny.model.bbox_decoder.layers[-1].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_decision_term_is_the_cross_entropy_of_the_first_answer_token(tiny_shared, phantom):
    """Off by default (the paper's objective); when weighted it is the CE of "Sure" vs the
    absent answer's first word, computed from the state just before it."""
    bundle = tiny_shared
    image, mask, box = phantom
    absent = TrainingSample(image, QUERY, "No, the kidney is not visible in this image.", mask[:0], box[None][:0])
    present = TrainingSample(image, QUERY, ANSWER, mask[None], box[None])
    with torch.no_grad():
        assert "decision" not in bundle.loss([present, absent])
        weights = dataclasses.replace(bundle.config.loss, decision=3.0)
        terms = bundle.loss([present, absent], weights)
        tokens = bundle.tokenize([(QUERY, ANSWER), (QUERY, absent.answer)])
        enc = bundle.encode_images([image, image])
        fwd = bundle.model(enc, tokens.input_ids, tokens.attention_mask, tokens.image_mask,
                           answer_start=tokens.answer_start)
    expected = []
    for row, start in enumerate(tokens.answer_start.tolist()):
        logits = bundle.model.mllm.logits(fwd.hidden[row, start - 1])
        expected.append(F.cross_entropy(logits[None].float(), tokens.input_ids[row, start][None]))
    torch.testing.assert_close(terms["decision"], torch.stack(expected).mean())
    first_words = {bundle.tokenizer.decode([int(tokens.input_ids[r, s])]).strip() for r, s in enumerate(tokens.answer_start.tolist())}
    assert len(first_words) == 2  # "Sure" and "No": the decision, not a shared template word
    without = {k: v for k, v in terms.items() if k not in ("total", "decision")}
    torch.testing.assert_close(terms["total"], combine(without, weights) + 3.0 * terms["decision"])


def test_naming_term_is_the_cross_entropy_of_structure_names_and_group_ends(tiny_tokenizer, phantom):
    """Off by default; when weighted it is the CE of the answer tokens that name a patch
    class or follow a group's last candidate token, each from the state before it."""
    config = dataclasses.replace(preset("tiny"), patch_classes=("kidney", "left lung"))
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    image, mask, box = phantom
    two = "Sure, <p>kidney</p> [SEG] and [BBOX], <p>left lung</p> [SEG] and [BBOX]."
    samples = [TrainingSample(image, QUERY, ANSWER, mask[None], box[None]),
               TrainingSample(image, QUERY, two, np.stack([mask, mask]), np.stack([box, box]))]
    with torch.no_grad():
        assert "naming" not in bundle.loss(samples)
        weights = dataclasses.replace(bundle.config.loss, naming=2.0)
        terms = bundle.loss(samples, weights)
        tokens = bundle.tokenize([(QUERY, s.answer) for s in samples])
        fwd = bundle.model(bundle.encode_images([image, image]), tokens.input_ids, tokens.attention_mask,
                           tokens.image_mask, answer_start=tokens.answer_start)
    expected, named = [], []
    for row, sample in enumerate(samples):
        start = int(tokens.answer_start[row])
        for index in bundle.prompts.naming_tokens(sample.answer, config.patch_classes, "[BBOX]"):
            logits = bundle.model.mllm.logits(fwd.hidden[row, start + index - 1])
            expected.append(F.cross_entropy(logits[None].float(), tokens.input_ids[row, start + index][None]))
            named.append(int(tokens.input_ids[row, start + index]))
    torch.testing.assert_close(terms["naming"], torch.stack(expected).mean())
    text = tiny_tokenizer.decode(named).replace(" ", "").replace("<p>", "").replace("</p>", "")
    # the first answer's form ("it", one entity), stop after its group and name; the second's names and ends
    assert text == "it.kidney" + "kidney,leftlung."
    without = {k: v for k, v in terms.items() if k not in ("total", "naming")}
    torch.testing.assert_close(terms["total"], combine(without, weights) + 2.0 * terms["naming"])


def test_patch_head_learns_which_structures_cover_each_image_cell(tiny_tokenizer, tiny_shared, phantom):
    """Models with ``patch_classes`` get a patch head on the mask head's image embedding;
    samples that know every structure on their slice add its BCE against each cell's coverage."""
    config = dataclasses.replace(preset("tiny"), patch_classes=("kidney", "liver"))
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    image, mask, box = phantom
    known = TrainingSample(image, QUERY, ANSWER, mask[None], box[None], structures={"kidney": mask, "aorta": mask})
    unknown = TrainingSample(image, QUERY, ANSWER, mask[None], box[None])
    with torch.no_grad():
        terms = bundle.loss([unknown, known])
        encoding = bundle.encode_images([image])
        alone = bundle.patch_loss([image], [known.structures])
    grid = config.sam.embedding_size
    coverage = torch.zeros(grid * grid, 2)
    coverage[:, :1] = structure_coverage(torch.as_tensor(mask)[None], grid)  # aorta: not a class
    assert 0 < coverage.sum() < grid * grid and coverage[:, 1].sum() == 0  # the liver is absent: zero everywhere
    logits = bundle.model.patch_logits(encoding.sam, encoding.resized)[0]
    assert logits.shape == (grid * grid, 2)
    present = torch.tensor([1.0, 0.0])  # kidney on the slice, liver not
    expected = (F.binary_cross_entropy_with_logits(logits, coverage)
                + 0.2 * F.binary_cross_entropy_with_logits(logits.amax(0), present))
    torch.testing.assert_close(terms["patch"], expected)
    torch.testing.assert_close(alone["patch"], expected)  # the patches phase: the same term on its own
    torch.testing.assert_close(alone["total"], config.loss.patch * expected)
    with torch.no_grad():
        assert "patch" not in bundle.loss([unknown])
        assert "patch" not in bundle.loss([known], dataclasses.replace(config.loss, patch=0.0))
        assert tiny_shared.model.patch_head is None and "patch" not in tiny_shared.loss([known])  # the preset has none
    with pytest.raises(ValueError, match="patch_classes"):
        dataclasses.replace(preset("tiny"), patch_classes=("liver", "liver"))


def test_a_mismatch_between_answer_groups_and_masks_is_reported(tiny, phantom):
    image, mask, box = phantom
    sample = TrainingSample(image, QUERY, ANSWER, np.stack([mask, mask]), np.stack([box, box]))
    with pytest.raises(ValueError, match="1 grounded groups but 2 masks"):
        tiny.loss([sample])


@pytest.mark.slow
def test_loss_decreases_over_50_steps_on_one_fixed_batch(tiny, phantom):
    """The tiny preset has no pretrained encoders, so (as its from-scratch stage does) all
    parameters train here; every supervised term must fall."""
    image, mask, box = phantom
    configure_trainable(tiny.model, train_encoders=True)
    tiny.model.train()
    samples = [
        TrainingSample(image, QUERY, ANSWER, mask[None], box[None]),
        TrainingSample(image[:, ::-1].copy(), "where is the organ on the left?", ANSWER,
                       mask[:, ::-1].copy()[None], np.array([[1 - box[2], box[1], 1 - box[0], box[3]]])),
    ]
    params = [p for p in tiny.model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    history = []
    for _ in range(50):
        terms = tiny.loss(samples)
        optimiser.zero_grad()
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    first, last = history[0], history[-1]
    assert last["total"] < 0.5 * first["total"]
    for term in ("ce", "bce", "dice", "l1", "giou"):
        assert last[term] < first[term], term
    assert last["dice"] < 0.5 * first["dice"]


def test_ground_truth_box_prompts_replace_predicted_boxes_per_group(tiny, phantom):
    image, mask, box = phantom
    sample = TrainingSample(image, QUERY, ANSWER, mask[None], box[None])
    captured = []
    decode = tiny.model.mask_head.decode
    tiny.model.mask_head.decode = lambda e, s, boxes, p=None, f=None: (captured.append(boxes), decode(e, s, boxes, p, f))[1]
    try:
        with torch.no_grad():
            tiny.loss([sample], gt_box_prompts=1.0)
            tiny.loss([sample], gt_box_prompts=0.0)
    finally:
        del tiny.model.mask_head.decode
    resized = torch.tensor([256.0, 192.0, 256.0, 192.0])
    torch.testing.assert_close(captured[0][0], torch.as_tensor(box) * resized)
    assert not torch.allclose(captured[1][0], captured[0][0])


def test_box_prompted_segmentation_loss_trains_only_the_mask_head(tiny, phantom):
    image, mask, box = phantom
    train_only(tiny.model, "mask_head.")
    terms = tiny.segmentation_loss([image, image], [mask[None], np.stack([mask, mask])], [box[None], np.stack([box, box])],
                                   jitter=0.1, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"bce", "dice", "total"} and torch.isfinite(terms["total"])
    terms["total"].backward()
    grads = {n: p.grad for n, p in tiny.model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("mask_head.") for n in grads)
    assert any(n.startswith("mask_head.sam.vision_encoder.") for n in grads)
    with pytest.raises(ValueError, match="no targets"):
        tiny.segmentation_loss([image], [mask[:0][None][:0]], [box[None][:0]])


def test_sam_positional_frequencies_start_as_in_segment_anything(tiny):
    """N(0, 1) random Fourier features (transformers scales them by hidden/2, which makes an
    untrained mask head unable to locate its box prompt)."""
    embedding = tiny.model.mask_head.sam.shared_image_embedding.positional_embedding
    assert 0.5 < float(embedding.detach().std()) < 2.0
    assert embedding is tiny.model.mask_head.sam.prompt_encoder.shared_embedding.positional_embedding


def test_more_seg_tokens_than_box_tokens_keep_only_complete_groups(tiny_shared):
    model, tokenizer = tiny_shared.model, tiny_shared.tokenizer
    seg, box = model.candidate_token_ids
    word = tokenizer("liver", add_special_tokens=False).input_ids[0]
    ids = torch.tensor([[word, seg, box, word, seg, word, seg, word],  # 3 [SEG], 1 [BBOX] -> 1 group
                        [word, seg, word, box, seg, box, word, word]])  # 2 complete groups
    groups = model.find_groups(ids)
    assert groups.rows.tolist() == [0, 1, 1]
    assert groups.positions.tolist() == [[1, 2], [1, 3], [4, 5]]
    assert len(model.find_groups(ids, start=torch.tensor([3, 3]))) == 1  # only row 1's second group starts late enough


def test_fine_stem_starts_silent_then_adds_detail_to_the_masks(tiny_tokenizer, phantom):
    """``SamConfig.fine_features``: the stem's features join the decoder's upscaled grid;
    zero-initialised, a new stem leaves the masks exactly as they were."""
    config = dataclasses.replace(preset("tiny"), sam=dataclasses.replace(preset("tiny").sam, fine_features=True))
    bundle = build_random(config, seed=0, tokenizer=tiny_tokenizer)
    head = bundle.model.mask_head
    image, _, box = phantom
    with torch.no_grad():
        encoding = bundle.encode_images([image])
        side = 4 * config.sam.embedding_size
        assert encoding.fine.shape == (1, config.sam.prompt_dim // 8, side, side)
        seg = torch.randn(1, config.sam.prompt_dim)
        prompt = torch.as_tensor(np.asarray(box, np.float32))[None] * config.sam.image_size
        plain, _ = head.decode(encoding.sam, seg, prompt)
        silent, _ = head.decode(encoding.sam, seg, prompt, fine=encoding.fine)
        torch.testing.assert_close(silent, plain)
        torch.nn.init.normal_(head.fine_stem[-1].weight)
        detailed, _ = head.decode(encoding.sam, seg, prompt, fine=head.encode_fine(bundle.prepare_images([image])[0]))
        assert (detailed - plain).abs().max() > 1e-3
        again, _ = head.decode(encoding.sam, seg, prompt)  # the hook lasts one call
        torch.testing.assert_close(again, plain)
        with pytest.raises(ValueError, match="upscaled grid"):
            head.decode(encoding.sam, seg, prompt, fine=encoding.fine[..., :-1])
    assert build_random("tiny", seed=0, tokenizer=tiny_tokenizer).model.mask_head.fine_stem is None


def test_mask_quality_is_the_stability_of_the_mask():
    crisp = torch.full((1, 1, 8, 8), -9.0)
    crisp[..., 2:6, 2:6] = 9.0
    hesitant = torch.full((1, 1, 8, 8), -9.0)
    hesitant[..., 2:6, 2:6] = 0.5  # above 0 but inside the +-1 band
    hesitant[..., 3:5, 3:5] = 9.0
    nothing = torch.full((1, 1, 8, 8), -9.0)
    torch.testing.assert_close(mask_stability(torch.cat([crisp, hesitant, nothing])), torch.tensor([1.0, 0.25, 0.0]))

import dataclasses
import shutil

import pytest
import sentencepiece

from medisee.builder import tokenizer_corpus
from medisee.conversation import IGNORE_INDEX, PromptEncoder
from medisee.tokenizer import (add_candidate_tokens, candidate_token_ids, load_tokenizer, train_bpe_tokenizer,
                               write_sentencepiece_tokenizer)


def test_candidate_tokens_are_single_ids_and_text_round_trips(tiny_tokenizer, tmp_path):
    ids = candidate_token_ids(tiny_tokenizer, ("[SEG]", "[BBOX]"))
    assert len(set(ids)) == 2
    text = "Sure, it is [SEG] and [BBOX]. The kidney, 12 mm.\nNext line [/INST]"
    encoded = tiny_tokenizer(text, add_special_tokens=False).input_ids
    assert tiny_tokenizer.unk_token_id not in encoded
    assert tiny_tokenizer.decode(encoded) == text
    tiny_tokenizer.save_pretrained(str(tmp_path / "tok"))
    reloaded = load_tokenizer(tmp_path / "tok")
    assert reloaded(text, add_special_tokens=False).input_ids == encoded


def test_a_candidate_token_that_splits_is_rejected():
    tokenizer = train_bpe_tokenizer(["plain text only"], 100, ["[SEG]"])
    with pytest.raises(ValueError, match=r"candidate token '\[BBOX\]' tokenises to"):
        candidate_token_ids(tokenizer, ("[SEG]", "[BBOX]"))
    with pytest.raises(FileNotFoundError):
        load_tokenizer("/nonexistent/tokenizer")


# -- the reference's tokenisation (LLaVA-Med's slow, legacy Llama tokenizer) -------------------
@pytest.fixture(scope="module")
def llava_tokenizer_folders(tmp_path_factory):
    """The same SentencePiece tokenizer as LLaVA-Med ships it (tokenizer.model only), as
    transformers saves it (tokenizer.json only) and with both files."""
    root = tmp_path_factory.mktemp("tokenizers")
    model_only = write_sentencepiece_tokenizer(root / "model-only", tokenizer_corpus(), 1000)
    load_tokenizer(model_only).save_pretrained(str(root / "json-only"))
    assert not (root / "json-only" / "tokenizer.model").exists()
    shutil.copytree(root / "json-only", root / "both")
    shutil.copy(model_only / "tokenizer.model", root / "both")
    return {name: root / name for name in ("model-only", "json-only", "both")}


def reference_encoder(folder) -> PromptEncoder:
    tokenizer = load_tokenizer(folder)
    add_candidate_tokens(tokenizer, ("[SEG]", "[BBOX]"))
    return PromptEncoder(tokenizer, num_image_tokens=3, placeholder_id=-1, prompt_format="reference")


@pytest.mark.parametrize("variant", ["model-only", "json-only", "both"])
def test_every_tokenizer_folder_gives_the_reference_ids(llava_tokenizer_folders, variant):
    """The reference (transformers 4.x, use_fast=False, legacy) splits "[INST] <image>\\n{q}
    [/INST] [SEG] and [BBOX]. </s>" at <image> and at every added token and SentencePiece-
    encodes each piece on its own; written out here piece by piece."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(llava_tokenizer_folders["model-only"] / "tokenizer.model"))
    encoder = reference_encoder(llava_tokenizer_folders[variant])
    seg, bbox = candidate_token_ids(encoder.tokenizer, ("[SEG]", "[BBOX]"))
    query = "Which organ filters the blood?  Two spaces, é and 12 mm."
    expected = ([1] + sp.encode("[INST] ") + [-1] * 3 + sp.encode(f"\n{query} [/INST] ") + [seg] + sp.encode(" and ")
                + [bbox] + sp.encode(". ") + [2])
    encoded = encoder.encode(query, "[SEG] and [BBOX].")
    assert encoded.input_ids == expected
    answer = encoder.tokenizer.convert_ids_to_tokens(encoded.input_ids[encoded.answer_start:])
    assert answer == ["▁", "[SEG]", "▁", "▁and", "▁", "[BBOX]", "▁", ".", "▁", "</s>"]  # as the reference writes it
    assert encoded.labels[encoded.answer_start:] == encoded.input_ids[encoded.answer_start:]
    assert set(encoded.labels[:encoded.answer_start]) == {IGNORE_INDEX}
    prompt = encoder.encode(query)  # generation: the prompt ends with "[/INST]", the model writes the rest
    assert prompt.input_ids == expected[: encoded.answer_start] == [1] + sp.encode("[INST] ") + [-1] * 3 + sp.encode(
        f"\n{query} [/INST]")
    assert encoder.answer_ids("[SEG] and [BBOX].") == encoded.input_ids[encoded.answer_start:-2]


def test_the_loaded_fast_tokenizer_alone_would_differ(llava_tokenizer_folders):
    """Why LegacyEncoder exists: transformers 5's own tokenizers write the text after an added
    token without SentencePiece's leading space (so not the ids the weights were trained on)."""
    encoder = reference_encoder(llava_tokenizer_folders["both"])
    text = "[SEG] and [BBOX]"
    fast = encoder.tokenizer(text, add_special_tokens=False).input_ids
    assert encoder.legacy(text) != fast
    assert encoder.tokenizer.convert_ids_to_tokens(encoder.legacy(text)) == ["[SEG]", "▁", "▁and", "▁", "[BBOX]"]


def test_a_checkpoint_keeps_the_sentencepiece_model(tmp_path, llava_tokenizer_folders):
    from medisee.builder import build_random
    from medisee.config import preset
    from medisee.weights import load_checkpoint, save_checkpoint

    encoder = reference_encoder(llava_tokenizer_folders["model-only"])
    bundle = build_random(dataclasses.replace(preset("tiny"), prompt_format="reference"), tokenizer=encoder.tokenizer)
    saved = save_checkpoint(bundle, tmp_path / "ckpt")
    assert (saved / "tokenizer" / "tokenizer.model").read_bytes() == (
        llava_tokenizer_folders["model-only"] / "tokenizer.model").read_bytes()
    query = "where is the liver?"
    assert load_checkpoint(saved).prompts.encode(query, "[SEG] and [BBOX].") == bundle.prompts.encode(query, "[SEG] and [BBOX].")

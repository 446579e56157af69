import pytest

from medisee.tokenizer import candidate_token_ids, load_tokenizer, train_bpe_tokenizer


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

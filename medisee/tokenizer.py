"""Tokenizers: loading a local tokenizer folder, adding and checking the candidate tokens,
and training the tiny preset's own BPE tokenizer offline."""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import AutoTokenizer, PreTrainedTokenizerFast


def load_tokenizer(path: str | Path):
    """A tokenizer from a local folder (never a hub id)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def add_candidate_tokens(tokenizer, tokens: Iterable[str]) -> int:
    """Add the candidate tokens (as LISA/MediSee do); returns how many were new."""
    return tokenizer.add_tokens([t for t in tokens if t not in tokenizer.get_vocab()])


def candidate_token_ids(tokenizer, tokens: Iterable[str]) -> tuple[int, ...]:
    """The id of each candidate token; each must tokenise to exactly one id."""
    ids = []
    for token in tokens:
        encoded = tokenizer(token, add_special_tokens=False).input_ids
        if len(encoded) != 1:
            raise ValueError(f"candidate token {token!r} tokenises to {len(encoded)} ids {encoded}, expected 1")
        ids.append(encoded[0])
    return tuple(ids)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, candidate_tokens: Iterable[str]):
    """A small sentencepiece-style BPE tokenizer (Metaspace) with <unk>, <s>, </s> and the
    candidate tokens; every printable ASCII character is in the alphabet, so no text
    becomes <unk>."""
    core = Tokenizer(BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    core.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=list(string.printable.strip()) + ["\n", "\u2581"],
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    core.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in candidate_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )

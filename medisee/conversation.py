"""Prompt templates and answer parsing.

The prompt follows LLaVA's "mistral_instruct" conversation with an empty system prompt:
``<s>[INST] <image>\\n{query} [/INST] {answer}</s>``. The image placeholder is not a
vocabulary token: the encoder splits the text around it and records where the projected
image features go, so any tokenizer (the real Mistral one or the tiny preset's) works.
Two formats: "ours" tokenises the parts on their own; "reference" tokenises the text
``[INST] <image>\\n{query} [/INST] {answer} </s>`` as the reference code does
(``medisee.tokenizer.LegacyEncoder``), the token ids the released weights were trained on.

Answers carry the candidate tokens: ``Sure, it is [SEG] and [BBOX]. {explanation}``; with
several entities each group is ``<p>phrase</p> [SEG] and [BBOX]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .tokenizer import LegacyEncoder

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


def answer_prefix(candidate_tokens: tuple[str, ...], template: str = ANSWER_PREFIX) -> str:
    """The answer opening that the mask-only fast path teacher-forces (``template``: the
    config's ``fast_answer``; the reference forces ``[SEG] and [BBOX].``)."""
    return template.format(tokens=candidate_phrase(candidate_tokens))


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


PROMPT_END = " [/INST]"


class PromptEncoder:
    """Turns (query, answer) pairs into token ids with the image slot marked."""

    def __init__(self, tokenizer, num_image_tokens: int, placeholder_id: int = 0, prompt_format: str = "ours") -> None:
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.placeholder_id = placeholder_id
        self.legacy = LegacyEncoder(tokenizer) if prompt_format == "reference" else None

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of (the start of) an answer, as ``encode`` tokenizes it, without the end."""
        if self.legacy is not None:
            return self._reference_split(PROMPT_END, " " + answer.strip())[1]
        return self._ids(" " + answer.strip())

    def _reference_split(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """The reference's ids of ``prompt + answer`` (one text, as it tokenises them), split
        where the prompt's own ids stop: the answer starts after "[/INST]"'s last token."""
        alone = self.legacy(prompt)
        whole = self.legacy(prompt + answer)
        shared = 0
        while shared < min(len(alone), len(whole)) and alone[shared] == whole[shared]:
            shared += 1
        return whole[:shared], whole[shared:]

    def naming_tokens(self, answer: str, names: tuple[str, ...] | list[str], group_end: str) -> list[int]:
        """Indices into ``answer``'s tokens (as ``encode`` tokenizes them) that carry one of
        ``names`` (whole words, any case), the character after each ``group_end`` (the
        comma or full stop that says whether another group follows) or the first one after
        the opening "Sure, " (``it is`` for one entity, ``<p>`` for several)."""
        if self.legacy is not None:
            raise ValueError("naming tokens are found with the 'ours' prompt format only")
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
        answer_ids: list[int] = []
        if self.legacy is not None:  # as the reference: "[INST] <image>\n{query} [/INST] {answer} </s>"
            head = self.legacy("[INST] " + before, bos=True)
            ending = "" if answer is None else f" {answer.strip()} {self.tokenizer.eos_token}"
            tail, answer_ids = self._reference_split(after + PROMPT_END, ending)
        else:
            head = [self.tokenizer.bos_token_id] + self._ids("[INST] " + before)
            tail = self._ids(after + PROMPT_END)
            if answer is not None:
                answer_ids = self.answer_ids(answer) + [self.tokenizer.eos_token_id]
        image = [self.placeholder_id] * self.num_image_tokens
        prompt = head + image + tail
        labels = [IGNORE_INDEX] * len(prompt)
        answer_start = len(prompt)
        if answer is not None:
            prompt = prompt + answer_ids
            labels = labels + answer_ids
        elif opening is not None:
            prompt = prompt + list(opening)
            labels = labels + [IGNORE_INDEX] * len(opening)
        return EncodedPrompt(prompt, len(head), self.num_image_tokens, answer_start, labels)


_GROUP = re.compile(r"<p>(.*?)</p>", re.DOTALL)
# a tag, a stuttered piece of one ("<p>spleen</pleen</pleen</p>": the model repeats the
# tag's characters inside a word) or a stray bracket of one; answers hold no other "<" or ">"
_TAG_PIECE = re.compile(r"</?p[a-z]*>?|[<>]")
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
    text = _GROUP.sub(_named_once, _SAID_AGAIN.sub(_once(), re.sub(tokens, "", answer)))
    text = _TAG_PIECE.sub(" ", text)  # a stray tag between two words ("lung</p>left") parts them
    text = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip()
    text = _OPENER.sub("", text).strip()
    return ParsedAnswer(text=said_once(text), phrases=phrases)


def said_once(text: str) -> str:
    """``text`` with each word or short phrase said twice back to back said once ("and they
    and they" -> "and they"): greedy decoding refuses such repeats, but a candidate token or a
    broken tag between the two copies hides them from it, and parsing removes those."""
    while (found := REPEATED_WORD.search(text)) is not None:
        text = text[: found.start()] + found.group("unit") + text[found.end():]
    return text


# a named group after a separator: said again ("aorta, aorta."), the text keeps the first
_SAID_AGAIN = re.compile(r"(\s*(?:,|;|\band\b)?\s*)<p>(.*?)</p>", re.DOTALL)


def _once() -> Callable[[re.Match], str]:
    """For ``_SAID_AGAIN.sub``: a group's name the first time, nothing (separator included)
    when the answer names that structure again (its masks join the first's entity)."""
    said: set[str] = set()

    def keep_first(match: re.Match) -> str:
        name = match.group(2).strip().lower()
        if name and name in said:
            return ""
        said.add(name)
        return match.group(0)

    return keep_first


def _named_once(match: re.Match) -> str:
    """A group's phrase as text, unless the words just before it are that phrase ("The right
    lung<p>right lung</p>": the model wrote the name, then tagged it)."""
    phrase = match.group(1).strip()
    said = match.string[: match.start()].rstrip().lower()
    return " " if phrase and re.search(rf"\b{re.escape(phrase.lower())}$", said) else match.group(1)


# A word or a phrase of up to three words said twice back to back, perhaps across a comma
# ("the stomach stomach", "heartheart", "and, and", "right lung</p>right lung"), opening tags
# and candidate tokens aside (a "|" the repeat cannot cross): what a tiny language model's greedy
# decoding sometimes writes. Glued copies count from four letters on ("murmur" is a word).
_REPEAT = r"\b(?P<unit>\w+(?:\s+\w+){0,2})(?:[\s,;:]+(?P=unit)|(?<=\w{4})(?P=unit))"
REPEATED_WORD = re.compile(_REPEAT + r"\b", re.IGNORECASE)
_ENDS_REPEATED = re.compile(_REPEAT + r"$", re.IGNORECASE)
_MARKUP = re.compile(r"<p>|\[[A-Z][A-Z0-9_]*\]")  # a repeat may not span these; it may span "</p>"
LOOP_WORDS = 4  # greedy decoding may not say the same four words twice in one answer (a loop)


def _plain(text: str) -> str:
    return _MARKUP.sub(" | ", text.replace("</p>", " "))


def repeats_a_word(text: str) -> bool:
    return bool(REPEATED_WORD.search(_plain(text)))


def refuses_repeated_word(tokenizer) -> Callable[[list[int], int], bool]:
    """For greedy decoding: whether a token would end the text with its last word or phrase
    said a second time, back to back, or with four words it has already said in that order
    (the decoder then takes its next most probable token)."""
    def refuse(ids: list[int], token: int) -> bool:
        text = _plain(tokenizer.decode(ids + [token], skip_special_tokens=False))
        return bool(_ENDS_REPEATED.search(text)) or _ends_in_a_loop(text)

    return refuse


def _ends_in_a_loop(text: str) -> bool:
    """Whether the last ``LOOP_WORDS`` words of ``text`` (within one stretch between tags)
    were already said in that order."""
    stretches = [[w.lower() for w in re.findall(r"\w+", part)] for part in text.split("|")]
    last = stretches[-1][-LOOP_WORDS:]
    if len(last) < LOOP_WORDS:
        return False
    stretches[-1] = stretches[-1][:-1]  # an earlier occurrence ends before the last word
    return any(words[i:i + LOOP_WORDS] == last for words in stretches for i in range(len(words) - LOOP_WORDS + 1))

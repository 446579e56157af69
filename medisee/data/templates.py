"""Every phrasing the data pipeline writes: referring queries, reasoning-query phrasings,
MIMOSeg-style instructions and the answer builders.

Reasoning phrasings carry ids and a ``held_out`` flag: the test split is phrased only with
held-out phrasings, train and val only with the others, so evaluation measures how well a
model copes with wording it has never seen. Their placeholders:

``{name}`` the target (explanations only), ``{kind}`` the noun used instead ("organ"),
``{be}``/``{it}``/``{It}``/``{obj}`` verb and pronouns agreeing with the target (is/it/it or
are/they/them), ``{fact}``/``{fact2}`` two different facts of the phrasing's facet,
``{anchor}`` a location fact naming a structure visible in the image, ``{clue}``/``{phrase}``/
``{condition}`` a finding, ``{modality}``, ``{plane}``, ``{position}`` (coarse place in the
image as displayed) and, for visual-prompt phrasings, ``{region}`` ("the box [...]").
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cached_property
from string import Formatter

from ..conversation import answer_prefix, candidate_phrase

DEFAULT_CANDIDATES = ("[SEG]", "[BBOX]")
SPLITS = ("train", "val", "test")
# what a candidate token looks like; an answer for an absent target must hold none
CANDIDATE_PATTERN = re.compile(r"\[[A-Z][A-Z0-9_]*\]")

# Facet -> orientation of the MLMR-SD descriptions (attribute- or location-oriented).
FACET_ORIENTATION = {
    "function": "attribute",
    "appearance": "attribute",
    "findings": "attribute",
    "relation": "location",
    "place": "location",
    "position": "location",
    "visual-function": "attribute",
    "visual-findings": "attribute",
    "visual-appearance": "attribute",
}


@dataclass(frozen=True)
class Phrasing:
    """One way of asking (long and short) and of explaining, for one facet of knowledge."""

    id: str
    facet: str
    long: str
    short: str
    explanation: str
    held_out: bool = False

    @property
    def orientation(self) -> str:
        return FACET_ORIENTATION[self.facet]

    @cached_property
    def fields(self) -> frozenset[str]:
        """The placeholders the phrasing needs, so unusable ones can be skipped."""
        texts = (self.long, self.short, self.explanation)
        return frozenset(name for text in texts for _, name, _, _ in Formatter().parse(text) if name)


def _p(id: str, facet: str, long: str, short: str, explanation: str, held_out: bool = False) -> Phrasing:
    return Phrasing(id, facet, long, short, explanation, held_out)


REASONING_PHRASINGS: tuple[Phrasing, ...] = (
    # function
    _p("fn-01", "function",
       "Looking at this {modality} scan, I need the {kind} that {fact}. {It} also {fact2}. Can you point {obj} out?",
       "Which {kind} {fact}?",
       "The {name} {fact}, and {it} also {fact2}."),
    _p("fn-02", "function",
       "A student is learning what each part of the body does. Which {kind} shown in this image {fact}, and also {fact2}?",
       "Find the {kind} in this image that {fact}.",
       "The answer is the {name}, because {it} {fact}."),
    _p("fn-03", "function",
       "If the {kind} that {fact} stopped working, the whole body would suffer. Please find {obj} in this picture.",
       "Where {be} the {kind} that {fact}?",
       "The {name} {be} the {kind} that {fact}, so {it} {be} what the question points to."),
    _p("fn-04", "function",
       "Among the structures visible here, I am after the {kind} with this job: {it} {fact}. Which {be} {it}?",
       "Show me the {kind} that {fact}.",
       "The {name} {fact}; that role identifies {obj} as the answer."),
    _p("fn-05", "function",
       "My doctor told me about the {kind} that {fact} and {fact2}. Can you show me where {it} {be} on this scan?",
       "Which {kind} here {fact}?",
       "The {name} {fact}, which matches the description."),
    _p("fn-06", "function",
       "Consider the job each structure does. Which {kind} in this {modality} image both {fact} and {fact2}?",
       "Point to the {kind} that {fact}.",
       "The {name} {be} the answer: {it} {fact} and {fact2}.", held_out=True),
    _p("fn-07", "function",
       "A textbook describes the {kind} that {fact}. Where in this picture would I find {obj}?",
       "What {kind} in this picture {fact}?",
       "The description fits the {name}, since {it} {fact}.", held_out=True),
    # appearance
    _p("ap-01", "appearance",
       "On this {plane} {modality} slice, look for the {kind} that {fact}. {It} also {fact2}. Which {be} {it}?",
       "Which {kind} {fact} on this {modality} image?",
       "On {modality}, the {name} {fact}, matching the description."),
    _p("ap-02", "appearance",
       "A radiologist reading this {modality} scan describes the {kind} that {fact} and {fact2}. Where {be} {it}?",
       "Find the {kind} that {fact}.",
       "The {name} {fact} on {modality}, which is what the radiologist described."),
    _p("ap-03", "appearance",
       "Judging only by how things look on this {modality} image, which {kind} {fact}, and also {fact2}?",
       "Which {kind} in this scan {fact}?",
       "Of the structures in this image, the {name} {fact}."),
    _p("ap-04", "appearance",
       "I am new to reading {modality} images. I was told the {kind} I should find {fact}. Can you segment {obj} for me?",
       "Segment the {kind} that {fact}.",
       "That description matches the {name}: on {modality} {it} {fact}."),
    _p("ap-05", "appearance",
       "This {plane} {modality} image shows several structures. Which {kind} among them {fact} and {fact2}?",
       "On this image, which {kind} {fact}?",
       "The {name} {be} the {kind} that {fact} on {modality}.", held_out=True),
    _p("ap-06", "appearance",
       "Based on its look in this {modality} picture, identify the {kind} that {fact}. Please outline {obj}.",
       "Outline the {kind} that {fact}.",
       "It is the {name}, which {fact} on {modality} images.", held_out=True),
    # findings
    _p("fd-01", "findings",
       "{clue} Which {kind} in this image {phrase}?",
       "Which {kind} here {phrase}?",
       "The {name} can develop {condition}, which fits the situation described."),
    _p("fd-02", "findings",
       "{clue} The doctor suspects a problem in the {kind} that {phrase}. Please find {obj} in the image.",
       "Show the {kind} that {phrase}.",
       "The {name} {phrase}, since {condition} commonly affects {obj}."),
    _p("fd-03", "findings",
       "{clue} Looking at this {modality} scan, which {kind} should be checked first because {it} {phrase}?",
       "Which {kind} should be checked, as {it} {phrase}?",
       "The {name} should be checked: {it} {phrase}, and {condition} would fit these symptoms."),
    _p("fd-04", "findings",
       "Here is the clinical story. {clue} Please segment the {kind} that {phrase}.",
       "Segment the {kind} that {phrase}.",
       "The {name} {be} where {condition} arises, so {it} {be} the structure to segment."),
    _p("fd-05", "findings",
       "{clue} On this image, where {be} the {kind} that {phrase}?",
       "Can you locate the {kind} that {phrase}?",
       "This points to the {name}: {it} {phrase}, a sign of {condition}.", held_out=True),
    _p("fd-06", "findings",
       "Consider this patient. {clue} Which {kind} visible here {phrase}, and could explain the complaint?",
       "Mark the {kind} that {phrase}.",
       "The {name} {phrase}; {condition} there would explain the complaint.", held_out=True),
    # relation to structures visible in the image
    _p("rl-01", "relation",
       "In this {plane} {modality} image, the {kind} I am asking about {anchor}. Which {kind} {be} {it}?",
       "Which {kind} {anchor}?",
       "The {name} {anchor}, so {it} {be} the {kind} in question."),
    _p("rl-02", "relation",
       "Use the neighbouring structures as landmarks: the {kind} I mean {anchor}. Please segment {obj}.",
       "Segment the {kind} that {anchor}.",
       "The {name} {anchor}, which matches the relation described."),
    _p("rl-03", "relation",
       "Left and right here mean the patient's sides. Find the {kind} that {anchor}.",
       "Find the {kind} that {anchor}.",
       "Taking the patient's left and right into account, the {name} {anchor}."),
    _p("rl-04", "relation",
       "Look at how the structures in this image sit relative to one another. Which {kind} {anchor}, and also {fact}?",
       "Which {kind} in this image {anchor}?",
       "The {name} {anchor} and {fact}."),
    _p("rl-05", "relation",
       "Thinking about anatomy rather than appearance, which {kind} on this scan {anchor}?",
       "Tell me which {kind} {anchor}.",
       "The {name} {be} the answer, because {it} {anchor}.", held_out=True),
    _p("rl-06", "relation",
       "Some landmarks are already visible in this image. The target {kind} {anchor}. Where {be} {it}?",
       "Locate the {kind} that {anchor}.",
       "Relative to the landmarks, the {name} {anchor}.", held_out=True),
    # place in normal anatomy
    _p("pl-01", "place",
       "Thinking about normal anatomy, the {kind} I want {fact}. {It} also {fact2}. Please find {obj}.",
       "Which {kind} {fact}?",
       "The {name} {fact}, and {it} {fact2}."),
    _p("pl-02", "place",
       "Based on where things normally lie in the body, which {kind} in this {modality} image {fact}?",
       "Find the {kind} that normally {fact}.",
       "In normal anatomy the {name} {fact}."),
    _p("pl-03", "place",
       "On this {plane} slice, the {kind} I am looking for {fact}. Can you segment {obj}?",
       "Segment the {kind} that {fact}.",
       "The {name} {fact}, which places {obj} where the question says."),
    _p("pl-04", "place",
       "From an anatomy point of view, I mean the {kind} that {fact} and {fact2}. Which {be} {it} in this image?",
       "Which {kind} on this scan {fact}?",
       "By its place in the body, the {name} fits: {it} {fact}.", held_out=True),
    _p("pl-05", "place",
       "Normal anatomy can be enough to name a structure. Which {kind} in this {plane} image {fact}, and {fact2}?",
       "Identify the {kind} that {fact}.",
       "Normal anatomy points to the {name}, since {it} {fact}.", held_out=True),
    # coarse position in the displayed image
    _p("ps-01", "position",
       "Look at the {position} of this {plane} {modality} image. The {kind} there {fact}. Which {kind} {be} {it}?",
       "Which {kind} {be} in the {position} of this image?",
       "The {name} {be} the {kind} in the {position} of the image, and {it} {fact}."),
    _p("ps-02", "position",
       "Focus on the {position} of the picture: the {kind} found there {anchor}. Please segment {obj}.",
       "Segment the {kind} in the {position} of the picture.",
       "The {name} {be} in the {position} of the picture, and {it} {anchor}."),
    _p("ps-03", "position",
       "Keep in mind that the patient's right side is usually displayed on the viewer's left. "
       "Which {kind} in the {position} of this image {fact}?",
       "What {kind} {be} shown in the {position} of the image?",
       "The {name} {fact}, and here {it} {be} shown in the {position} of the image."),
    _p("ps-04", "position",
       "I need the {kind} in the {position} of this {modality} image; {it} {anchor}. Which {be} {it}?",
       "Name the {kind} in the {position} of the image, and outline {obj}.",
       "The {name} can be seen in the {position} of the image; {it} {anchor}.", held_out=True),
    _p("ps-05", "position",
       "Please outline the {kind} shown in the {position} of this image. As a hint, {it} {fact}.",
       "Outline the {kind} in the {position} of this image.",
       "Here the {name} {be} in the {position} of the image, and {it} {fact}.", held_out=True),
)

# Perspective IV (MIMOSeg): a box or point marks the target, the question asks about it.
VISUAL_PHRASINGS: tuple[Phrasing, ...] = (
    _p("vf-01", "visual-function",
       "Look at the structure at {region}. What does it do for the body, and can you segment it?",
       "What is the structure at {region}, and what does it do?",
       "The marked structure is the {name}; {it} {fact} and {fact2}."),
    _p("vf-02", "visual-function",
       "Please segment whatever lies at {region} and explain the part it plays in the body.",
       "Segment what lies at {region} and describe its job.",
       "That region shows the {name}, which {fact}.", held_out=True),
    _p("vd-01", "visual-findings",
       "The area marked by {region} may be diseased. Which structure is it, and what problems commonly affect it?",
       "Which structure is at {region}, and what can go wrong with it?",
       "The marked structure is the {name}, which can develop {condition}; {it} {phrase}."),
    _p("vd-02", "visual-findings",
       "A doctor marked {region} on this scan. Segment that structure and tell me which diseases it is prone to.",
       "What diseases affect the structure at {region}?",
       "This is the {name}, where {condition} is a common problem.", held_out=True),
    _p("va-01", "visual-appearance",
       "How does the structure at {region} normally look on {modality}, and what is it?",
       "Identify the structure at {region} from its look.",
       "It is the {name}; on {modality} {it} {fact}."),
    _p("va-02", "visual-appearance",
       "Describe the appearance of what is marked by {region} on this {modality} image and segment it.",
       "What is marked by {region}, judging by its look?",
       "The marked region is the {name}, which {fact} on {modality} images.", held_out=True),
)

# Plain referring queries (SA-Med2D training and Perspective I). No verb agrees with the
# class, so a list of labels ("liver, spleen and stomach") fits as well as one label.
REFERRING_TEMPLATES: tuple[str, ...] = (
    "Please segment the {class_name} in this image.",
    "Could you outline and box the {class_name} in this image?",
    "Find and mark the {class_name} in this scan.",
    "Show me the {class_name} with a mask and a bounding box.",
    "Highlight the {class_name} on this slice.",
    "Delineate the {class_name} shown here.",
    "I would like the {class_name} segmented in this picture.",
    "Mark out the {class_name} in this medical image.",
    "Locate the {class_name} and draw the outline.",
)

# Appended to a reasoning query so the model also learns the explicitly instructed form.
REASONING_SUFFIXES: tuple[str, ...] = (
    "Please respond with the segmentation mask and the bounding box, and explain your reasoning.",
    "Answer with a mask and a box for the target, and say why.",
    "Give the segmentation and the location box, then explain the reason.",
    "Provide the mask and bounding box of the answer with a short explanation.",
)

# Generic explanations naming the class, for records without a reasoning explanation.
PLAIN_EXPLANATIONS: tuple[str, ...] = (
    "The highlighted region is the {class_name}.",
    "This area corresponds to the {class_name}.",
    "The mask covers the {class_name}.",
    "Here the {class_name} has been outlined.",
)

# Absent targets: where the structure would normally be ({fact}: a general location fact).
ABSENT_TEMPLATES: tuple[str, ...] = (
    "The {name} {be} not visible in this image; normally {it} {fact}.",
    "This image does not show the {name}; in a typical patient {it} {fact}.",
    "The {name} cannot be seen on this image, although in the body {it} {fact}.",
)
ABSENT_UNKNOWN_TEMPLATES: tuple[str, ...] = (
    "The {name} cannot be seen anywhere in this image.",
    "Nothing in this image corresponds to the {name}.",
)

# Perspective II (MIMOSeg): a box or point is drawn with the question (it reaches the model
# through the visual prompt encoder, not as numbers in the text), the structure is to be named.
BOX_QUESTIONS: tuple[str, ...] = (
    "What is the structure in this box? Please segment it.",
    "Identify and segment the organ or lesion inside the box.",
    "Which structure lies within the drawn box? Outline it.",
    "Please segment whatever is inside the box and name it.",
    "Tell me what the box contains and draw its outline.",
)
POINT_QUESTIONS: tuple[str, ...] = (
    "What is the structure at this point? Please segment it.",
    "Identify and segment the organ or lesion under the point.",
    "Which structure does the clicked point fall on? Outline it.",
    "Please segment whatever lies at the point and name it.",
)
PROMPT_ANSWERS: tuple[str, ...] = (
    "The structure there is the {class_name}.",
    "That region contains the {class_name}.",
    "It is the {class_name}, segmented and boxed here.",
    "The marked area shows the {class_name}.",
)


def prompt_region(box: tuple[float, float, float, float] | None = None, point: tuple[float, float] | None = None) -> str:
    """``{region}`` of the visual-prompt phrasings: "the drawn box" or "the clicked point".
    The coordinates themselves go to the visual prompt encoder, as they do from Slicer."""
    if (box is None) == (point is None):
        raise ValueError("give exactly one of box and point")
    return "the drawn box" if box is not None else "the clicked point"


def phrasings_for(split: str, phrasings: tuple[Phrasing, ...] = REASONING_PHRASINGS) -> tuple[Phrasing, ...]:
    """The held-out phrasings for "test", the others for "train" and "val"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    held_out = split == "test"
    return tuple(p for p in phrasings if p.held_out == held_out)


def referring_query(class_name: str, rng: random.Random) -> str:
    return rng.choice(REFERRING_TEMPLATES).format(class_name=class_name)


def plain_explanation(class_name: str, rng: random.Random) -> str:
    return rng.choice(PLAIN_EXPLANATIONS).format(class_name=class_name)


def grounded_answer(explanation: str, candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> str:
    """Always the one canonical opening: the predictor scores a target by its probability."""
    text = explanation.strip()
    prefix = answer_prefix(candidate_tokens)
    return f"{prefix} {text}" if text else prefix


ABSENT_OPENING = "No, there is no {name}"  # the fast path's presence check reads the name the model fills in


def absent_answer(class_name: str, explanation: str) -> str:
    """The answer for a target that is not in the image; it must not ground anything."""
    answer = f"{ABSENT_OPENING.format(name=class_name)} in this image. {explanation.strip()}".strip()
    if CANDIDATE_PATTERN.search(answer):
        raise ValueError(f"an absent answer must not contain a candidate token: {answer!r}")
    return answer


def grouped_answer(phrases: list[str] | tuple[str, ...], candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> str:
    """``Sure, <p>liver</p> [SEG] and [BBOX], <p>spleen</p> [SEG] and [BBOX].`` -- one
    group per entity, in mask order; ``conversation.parse_answer`` reads the phrases back."""
    if not phrases:
        raise ValueError("a grouped answer needs at least one phrase")
    tokens = candidate_phrase(candidate_tokens)
    return "Sure, " + ", ".join(f"<p>{phrase}</p> {tokens}" for phrase in phrases) + "."


def named_answer(phrase: str, explanation: str, candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> str:
    """``Sure, <p>liver</p> [SEG] and [BBOX]. The marked area ...``: one named group, then
    the explanation. For questions about a drawn box or click the name comes first, where
    the visual tags say it, not somewhere in free text the tiny model can drift from."""
    text = explanation.strip()
    grouped = grouped_answer([phrase], candidate_tokens)
    return f"{grouped} {text}" if text else grouped

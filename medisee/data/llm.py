"""Optional hook: let a large language model write the reasoning queries, as the paper's
GPT-4 step did, for users who have an LLM client. Not required: the template generator in
``queries`` works offline and is the default.

Any object with ``complete(prompt: str) -> str`` is a client (wrap an OpenAI, Azure or
local server client in three lines). The prompt gives the model our knowledge-base facts
and the image context and asks for JSON; every answer is checked (valid JSON, the target's
name absent from the queries) and a failure falls back to the template generator, so a
flaky model never breaks a data build.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Protocol

from .knowledge import find_structure
from .queries import QueryAnswer, TargetContext, generate_queries

log = logging.getLogger(__name__)


class CompletionClient(Protocol):
    def complete(self, prompt: str) -> str: ...


def build_prompt(context: TargetContext, count: int) -> str:
    structure = find_structure(context.class_name)
    if structure is None:
        raise ValueError(f"unknown structure {context.class_name!r}")
    facts = {
        "function": list(structure.function),
        "location": [loc.text for loc in structure.location],
        "appearance": list(structure.appearance.get(context.modality, ())),
        "findings": [f.condition for f in structure.findings],
    }
    return (
        "You write questions for a medical image segmentation dataset. The target structure is "
        f"'{structure.name}' on a {context.modality} {context.plane} image; also visible: "
        f"{', '.join(context.present) or 'nothing else'}; the target lies in the {context.position or 'image'}.\n"
        f"Facts about the target: {json.dumps(facts)}\n"
        f"Write {count} implicit questions that identify the target WITHOUT naming it or its synonyms "
        f"({', '.join(structure.terms)}), half about its attributes (function, appearance, findings) and half "
        "about its location relative to the visible structures. Reply with only a JSON list of objects with keys "
        '"long" (one or two sentences of clinical context ending in the question), "short" (one short question), '
        '"explanation" (one sentence naming the target and saying why it answers) and "orientation" '
        '("attribute" or "location").'
    )


def llm_queries(client: CompletionClient, context: TargetContext, split: str, rng: random.Random,
                count: int = 2) -> list[QueryAnswer]:
    """Queries written by ``client``; the template generator's when the reply is unusable."""
    structure = find_structure(context.class_name)
    try:
        reply = json.loads(client.complete(build_prompt(context, count)))
        answers = [
            QueryAnswer(long=item["long"].strip(), short=item["short"].strip(), explanation=item["explanation"].strip(),
                        orientation=item.get("orientation", "attribute"), template_id="llm")
            for item in reply[:count]
        ]
        terms = [t.lower() for t in structure.terms] if structure else [context.class_name.lower()]
        if len(answers) < count or any(t in (a.long + " " + a.short).lower() for a in answers for t in terms):
            raise ValueError("the reply names the target or has too few questions")
        return answers
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("LLM queries for %s unusable (%s); using templates", context.class_name, err)
        return generate_queries(context, split, rng, count)

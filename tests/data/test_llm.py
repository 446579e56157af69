import json
import random

from medisee.data.llm import build_prompt, llm_queries
from medisee.data.queries import TargetContext

CONTEXT = TargetContext("liver", "CT", "axial", ["stomach", "right kidney"], "left side")


class Client:
    def __init__(self, reply: str):
        self.reply, self.prompts = reply, []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.reply


def test_prompt_carries_facts_and_forbids_the_name():
    prompt = build_prompt(CONTEXT, 2)
    assert "WITHOUT naming it" in prompt and "stomach" in prompt and "bile" in prompt.lower()


def test_good_replies_are_used_and_bad_ones_fall_back_to_templates():
    good = [{"long": "Jaundice and a big organ under the ribs: which one makes bile?", "short": "Which organ makes bile?",
             "explanation": "The liver makes bile.", "orientation": "attribute"},
            {"long": "Right upper quadrant: which large organ is there?", "short": "What is the big organ on the right?",
             "explanation": "The liver lies there.", "orientation": "location"}]
    answers = llm_queries(Client(json.dumps(good)), CONTEXT, "train", random.Random(0))
    assert [a.template_id for a in answers] == ["llm", "llm"] and answers[0].short == "Which organ makes bile?"
    naming = [dict(good[0], short="Where is the liver?"), good[1]]
    for reply in ("not json", json.dumps(naming), json.dumps(good[:1])):
        answers = llm_queries(Client(reply), CONTEXT, "train", random.Random(0))
        assert len(answers) == 2 and all(a.template_id != "llm" for a in answers)

"""``medisee.evaluation.evaluate_human``: the test records asked questions people wrote, counted exactly
with a scripted predictor; the question file is checked; the exam never reaches training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medisee.data.records import Record
from medisee.predictor import Entity, Prediction
from medisee.evaluation.evaluate_human import HumanQueriesError, answer_agrees, evaluate_human, read_human_queries

ROOT = Path(__file__).resolve().parents[2]
H, W = 32, 32
LIVER = np.zeros((H, W), bool)
LIVER[4:14, 4:20] = True
SPLEEN = np.zeros((H, W), bool)
SPLEEN[18:28, 10:30] = True
QUESTIONS = {  # written for this test, not taken from any exam file
    "structures": {
        "liver": {"explicit": ["liver pls", "Outline the LIVER."], "implicit": ["Which organ makes bile?"]},
        "spleen": {"explicit": ["spleen"], "implicit": ["which organ sits under the left ribs"]},
        "left kidney": {"explicit": ["L kidney"], "implicit": ["left bean-shaped organ"]},
    },
    "multi": [{"structures": ["liver", "spleen"], "query": "liver + spleen"},
              {"structures": ["liver", "left kidney"], "query": "liver and L kidney"}],
    "not_in_catalogue": [{"structure": "pancreas", "query": "show the pancreas"}],
}


def entity(name: str, mask: np.ndarray) -> Entity:
    return Entity(name, mask, (0.0, 0.0, 1.0, 1.0), 0.9, 0.5)


class Scripted:
    """Answers by the query: what a model that understood (or not) would return."""

    def __init__(self, answers: dict[str, list[Entity]]) -> None:
        self.answers, self.asked = answers, []

    def predict(self, image, query, mode="full"):
        self.asked.append(query)
        found = self.answers.get(query, [])
        text = ("Sure, " + ", ".join(f"<p>{e.phrase}</p> [SEG] and [BBOX]" for e in found) + "."
                if found else "No, there is no such structure in this image.")
        return Prediction(text, found)


@pytest.fixture
def records(tmp_path) -> list[Record]:
    Image.fromarray(np.full((H, W), 90, np.uint8)).save(tmp_path / "slice.png")
    for name, mask in (("liver", LIVER), ("spleen", SPLEEN)):
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"{name}.png")
    image = tmp_path / "slice.png"
    return [
        Record(image, tmp_path / "liver.png", "liver", "q", "q", (4 / W, 4 / H, 20 / W, 14 / H), extra={"modality": "CT"}),
        Record(image, tmp_path / "spleen.png", "spleen", "q", "q", (10 / W, 18 / H, 30 / W, 28 / H),
               extra={"modality": "CT"}),
        Record(image, None, "left kidney", "q", "q", None, absent=True, extra={"modality": "CT"}),
    ]


@pytest.fixture
def question_file(tmp_path) -> Path:
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(QUESTIONS))
    return path


def test_people_questions_are_counted_per_kind_structure_and_request(records, question_file, tmp_path):
    liver, spleen = entity("liver", LIVER), entity("spleen", SPLEEN)
    predictor = Scripted({
        "liver pls": [liver], "Outline the LIVER.": [spleen],  # one explicit request misread
        "Which organ makes bile?": [liver], "spleen": [spleen], "which organ sits under the left ribs": [spleen],
        "L kidney": [liver],  # the absent kidney "found": a false entity
        "liver + spleen": [liver, spleen],
        "show the pancreas": [],
    })
    metrics = evaluate_human(predictor, records, read_human_queries(question_file), tmp_path / "out", per_record=2)
    groups = metrics["groups"]
    assert groups["explicit"]["count"] == 3 and groups["implicit"]["count"] == 2
    assert groups["explicit"]["giou"] == pytest.approx(2 / 3) and groups["implicit"]["giou"] == 1.0
    assert groups["class liver"]["named_rate"] == pytest.approx(2 / 3)
    assert groups["CT explicit"]["box_count"] == 3
    assert groups["absent"]["absent_count"] == 2 and groups["absent"]["absence_rate"] == 0.5  # L kidney found, implicit not
    assert groups["not_in_catalogue"]["absence_rate"] == 1.0
    assert groups["nothing"]["absent_count"] == 3
    # only "liver + spleen" can be asked: the left kidney is not on the slice
    assert groups["multi"]["multi_count"] == 1 and groups["multi"]["all_returned_rate"] == 1.0
    assert "liver and L kidney" not in predictor.asked
    assert metrics["agreement"]["count"] == len(predictor.asked) and metrics["repeated_words"]["rate"] == 0.0
    lines = (tmp_path / "out" / "human_per_sample.jsonl").read_text().splitlines()
    assert len(lines) == metrics["queries"] == len(predictor.asked)
    assert json.loads((tmp_path / "out" / "human_metrics.json").read_text())["groups"]["overall"]["count"] == 5


def test_a_multi_request_needs_every_structure_named_and_segmented(records, question_file, tmp_path):
    wrong_mask = entity("spleen", LIVER)
    predictor = Scripted({"liver + spleen": [entity("liver", LIVER), wrong_mask]})
    metrics = evaluate_human(predictor, records, read_human_queries(question_file), tmp_path / "out")
    multi = metrics["groups"]["multi"]
    assert multi["all_named_rate"] == 1.0 and multi["all_returned_rate"] == 0.0


def test_answers_agree_with_their_entities_only_when_they_name_them():
    liver = entity("liver", LIVER)
    assert answer_agrees(Prediction("Sure, <p>liver</p> [SEG] and [BBOX].", [liver]))
    assert not answer_agrees(Prediction("Sure, it is [SEG] and [BBOX]. The stomach ...", [liver]))
    assert answer_agrees(Prediction("No, there is no liver in this image.", []))
    assert not answer_agrees(Prediction("Sure, it is the liver.", []))


@pytest.mark.parametrize("content, message", [
    ("not json", "not a readable JSON"),
    (json.dumps({"multi": []}), "structures"),
    (json.dumps({"structures": {"pancreas": {"explicit": ["x"]}}}), "not in the catalogue"),
    (json.dumps({"structures": {"liver": {"explicit": [""]}}}), "non-empty questions"),
    (json.dumps({"structures": {}, "multi": [{"structures": ["liver"], "query": "x"}]}), "two or more"),
])
def test_bad_question_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "q.json"
    path.write_text(content)
    with pytest.raises(HumanQueriesError, match=message):
        read_human_queries(path)
    with pytest.raises(HumanQueriesError, match="no such question file"):
        read_human_queries(tmp_path / "missing.json")


def test_the_exam_is_never_read_by_training_template_or_tokenizer_code():
    """Only the evaluation may open the people's questions: no training, data-generation or
    tokenizer module names the file or its folder (the build only forwards a given path)."""
    readers = [*ROOT.joinpath("training").glob("*.py"), *ROOT.joinpath("medisee", "data").rglob("*.py"),
               *ROOT.joinpath("medisee", "data", "knowledge").glob("*.json"),
               ROOT / "medisee" / "tokenizer.py", ROOT / "medisee" / "assets" / "tokenizer_corpus.txt",
               *ROOT.joinpath("training", "configs").glob("*.yaml")]
    # the evaluation reads it; the build passes a path it is given on to the evaluation; the card names it
    allowed = {ROOT / "medisee" / "evaluation" / "evaluate_human.py", ROOT / "training" / "build_default.py",
               ROOT / "training" / "model_card.py"}
    offenders = [p.name for p in readers if "shared/queries" in p.read_text(encoding="utf-8")
                 or (p not in allowed and "human-queries" in p.read_text(encoding="utf-8"))]
    assert offenders == []

"""Reproduce the bundled default model (the tiny preset) from nothing, offline.

    .venv/bin/python -m training.build_default            # one to two and a half hours on 2 CPU cores

1. ``medisee demo-data``: synthetic CT patients + MNI152 brain "patients", patient-level
   splits, knowledge-driven queries (held-out phrasings in the test split).
2. Stage 0, segmentation: the SAM-like mask head learns box-prompted segmentation from
   scratch (MedSAM-style), every target of every slice, no language model.
   Stage 1, pretrain: from stage 0, everything but the SAM-like image encoder trains (its
   tokenizer fitted to the data; no pretrained CLIP or language model exists offline). The
   image encoder stays as stage 0 left it from here on, so each slice is encoded once.
   Stage 2, presence: stage 1 continued with absent-target questions oversampled.
3. Stage 3, end-to-end (eq. 4) with the paper's freezing rules.
4. Stage 4, fine-tuning with the similarity loss (eq. 5).
5. Stage 5a, patches: a patch head on the mask head's image embedding learns, alone, which
   structures cover each cell. Stage 5, MIMO: the visual prompt encoder, input aligner and
   the patch head's visual tags are added; the four MIMOSeg perspectives are mixed with the
   MediSee data. Stage 5b, masks: a fine-feature stem on the pixels joins the mask
   decoder, and the two train alone on the same data, the MR slices drawn more often (the
   grey-matter ribbon needs more mask steps than the CT organs).
6. Stage 5c-a, queries: a query head on a frozen pretrained sentence encoder learns alone
   which structures a question asks for (ordinary requests, pairs, structures outside the
   catalogue, typed-text noise). Stage 5c, requests: the language model learns to read its
   query tags; the mask and patch heads stay frozen.
7. The score threshold and box source of stages 4 and 5c are chosen on the validation split
   (``medisee.evaluation.calibrate``: the lowest threshold at which 85% of its absent targets get no
   entity; the box decoder's boxes or the masks' tight boxes, whichever hits more).
8. ``medisee evaluate`` (and ``--mimo``) on the held-out test split, for stage 4 (the
   single-entity baseline) and stage 5c, and with ``--human-queries FILE`` the people's
   questions in full and fast mode; with ``--install`` the model is copied to
   ``medisee/assets/default-model`` (the model the CLI and server use by default) and its
   results are written into docs/MODEL_CARD.md, the people's questions first.
Each stage resumes if interrupted; finished stages are skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from medisee.data.demo.build import build_demo_dataset
from medisee.data.mlmr import read_mlmr_jsonl
from medisee.evaluation.calibrate import calibrate
from medisee.evaluation.evaluate import evaluate
from medisee.evaluation.evaluate_human import evaluate_human, read_human_queries
from medisee.evaluation.evaluate_mimo import evaluate_mimo, mimo_instructions
from medisee.predictor import Predictor
from medisee.weights import load_checkpoint, read_metadata, save_checkpoint

from . import model_card
from .checkpoints import read_state
from .config import TrainConfig, load_config
from .train import run

log = logging.getLogger("medisee.build_default")
ROOT = Path(__file__).resolve().parent.parent
STAGES = ("tiny-0-segmentation.yaml", "tiny-1-pretrain.yaml", "tiny-2-presence.yaml", "tiny-3-end-to-end.yaml",
          "tiny-4-finetune.yaml", "tiny-5a-patches.yaml", "tiny-5-mimo.yaml", "tiny-5b-masks.yaml",
          "tiny-5c-queries.yaml", "tiny-5c-requests.yaml")
BASELINE_STAGE = "tiny-4-finetune.yaml"  # the single-entity model the MIMO stage starts from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="training.build_default", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="working folder for data and runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--install", action="store_true", help="copy the result into medisee/assets/default-model")
    parser.add_argument("--human-queries", type=Path, default=None, metavar="FILE",
                        help="also ask the test split questions people wrote (human-queries.json) and lead the "
                        "model card with them; the file is only read here, never trained on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[medisee] %(message)s")

    build_started = time.monotonic()
    data = args.runs / "demo-data"
    if not (data / "manifest.json").exists():
        log.info("generating demo data in %s", data)
        build_demo_dataset(data, seed=args.seed, patients=args.patients, overwrite=True)
    for stage in STAGES:
        config = stage_config(stage, args.runs)
        state = read_state(config.output_dir)
        if state is not None and state.step >= config.steps:
            log.info("%s already finished (%d steps)", stage, state.step)
            continue
        log.info("running %s (%d steps)", stage, config.steps)
        started = time.monotonic()
        run(config)
        log.info("%s took %.1f min", stage, (time.monotonic() - started) / 60)

    final = stage_config(STAGES[-1], args.runs).output_dir / "model"
    baseline = stage_config(BASELINE_STAGE, args.runs).output_dir / "model"
    for model_dir in (baseline, final):  # both calibrated the same way, on the validation split
        calibrate(model_dir, data / "val.jsonl")
    before = evaluate_test_split(baseline, data / "test.jsonl", args.runs / "eval-test-stage4")
    metrics = evaluate_test_split(final, data / "test.jsonl", args.runs / "eval-test")
    mimo = evaluate_mimo_split(final, data / "test.jsonl", args.runs / "eval-test")
    human = human_fast = None
    if args.human_queries is not None:
        human, human_fast = (evaluate_human_split(final, data / "test.jsonl", args.human_queries,
                                                  args.runs / f"eval-test-human-{mode}", mode) for mode in ("full", "fast"))
    if args.install:
        install(final, metrics, data, mimo, model_card.headline(before), human, human_fast)
    log.info("build finished in %.0f min", (time.monotonic() - build_started) / 60)
    return 0


def stage_config(stage: str, runs: Path) -> TrainConfig:
    """A stage's config with its paths under ``runs`` (the files name the repository's
    ``runs/``, where the stages find each other's output and the demo data)."""
    config = load_config(ROOT / "training" / "configs" / stage)
    default = (ROOT / "runs").resolve()

    def moved(path: Path) -> Path:
        return runs.resolve() / path.relative_to(default) if path.is_relative_to(default) else path

    init = config.init
    if init.startswith("checkpoint:"):
        init = "checkpoint:" + str(moved(Path(init.split(":", 1)[1])))
    return dataclasses.replace(
        config, init=init, output_dir=moved(config.output_dir), val=config.val and moved(config.val),
        train=[dataclasses.replace(source, path=moved(source.path)) for source in config.train])


def install(model_dir: Path, metrics: dict, data: Path, mimo: dict | None = None, before: dict | None = None,
            human: dict | None = None, human_fast: dict | None = None,
            before_name: str = model_card.BASELINE_NAME) -> Path:
    """Copy a trained model into the package (bfloat16, to keep the repository small; it is
    loaded back as float32 on a CPU) and write docs/MODEL_CARD.md from its test metrics."""
    target = ROOT / "medisee" / "assets" / "default-model"
    meta = read_metadata(model_dir) | {
        "trained": True, "description": "bundled tiny MediSee trained on synthetic CT and MNI152 demo data",
        "test_metrics": model_card.headline(metrics),
        "test_mimo_metrics": mimo and {"perspectives": mimo["perspectives"], "prompt_naming": mimo["prompt_naming"]},
    }
    bundle = load_checkpoint(model_dir, dtype=torch.bfloat16)
    save_checkpoint(bundle, target, metadata=meta)
    manifest = json.loads((data / "manifest.json").read_text())
    card = ROOT / "docs" / "MODEL_CARD.md"
    card.write_text(model_card.render(metrics, manifest, "python -m training.build_default --install", mimo=mimo,
                                      before=before, threshold=bundle.config.score_threshold,
                                      box_source=bundle.config.box_source, human=human, human_fast=human_fast,
                                      before_name=before_name))
    log.info("installed the default model in %s; results in %s", target, card)
    return target


def evaluate_test_split(model_dir: Path, data: Path, out: Path) -> dict:
    metrics = evaluate(Predictor(load_checkpoint(model_dir)), read_mlmr_jsonl(data), out)
    log.info("test split: %s", json.dumps(metrics.get("overall", {})))
    return metrics


def evaluate_mimo_split(model_dir: Path, data: Path, out: Path, limit_per_perspective: int = 100) -> dict:
    chosen = mimo_instructions(read_mlmr_jsonl(data), limit_per_perspective=limit_per_perspective)
    metrics = evaluate_mimo(Predictor(load_checkpoint(model_dir)), chosen, out)
    log.info("test split, MIMO: %s", json.dumps(metrics["perspectives"]["all"]))
    return metrics


def evaluate_human_split(model_dir: Path, data: Path, questions: Path, out: Path, mode: str) -> dict:
    """The test split asked with the people's questions (``medisee.evaluation.evaluate_human``)."""
    metrics = evaluate_human(Predictor(load_checkpoint(model_dir)), read_mlmr_jsonl(data), read_human_queries(questions),
                             out, mode=mode)
    log.info("test split, people's questions (%s): %s", mode, json.dumps(metrics["groups"].get("overall", {})))
    return metrics


if __name__ == "__main__":
    raise SystemExit(main())

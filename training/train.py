"""``medisee train --config FILE``: the DeepSpeed training loop.

Single process on a CPU (gloo), or multi-GPU with the launcher:
``deepspeed --module training.train --config FILE``.

Phases: ``pretrain`` (the tiny preset only: everything trains, encoders included, because
no pretrained encoders exist offline), ``end_to_end`` (eq. 4: LoRA on the language model,
full training of mask decoder, routers, seg projection and box decoder; encoders frozen)
and ``finetune`` (eq. 5: adds the similarity loss against the plain label query).
A killed run started again with the same config resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from medisee.atomic import write_json
from medisee.builder import build_random
from medisee.config import preset
from medisee.data import mimo, queries, requests
from medisee.data.loader import (
    asked_structures,
    group_by_image,
    image_targets,
    slice_key,
    slice_structures,
    to_training_sample,
    training_query,
)
from medisee.data.mixing import MixedSampler
from medisee.data.mlmr import read_mlmr_jsonl
from medisee.data.samed2d import read_samed2d_map
from medisee.evaluation.evaluate import evaluate
from medisee.model import MediSee
from medisee.model.frozen_encoder_cache import FrozenEncoderCache
from medisee.model.trainable import MASK_DECODER, configure_trainable, count_parameters, freeze, train_only
from medisee.models import load_model
from medisee.predictor import Predictor
from medisee.tokenizer import load_tokenizer, train_bpe_tokenizer
from medisee.weights import extend_checkpoint, load_checkpoint, save_checkpoint

from . import checkpoints
from .build_locks import clear_stale_build_locks
from .config import TrainConfig, load_config, to_dict

log = logging.getLogger("medisee.train")


@dataclass
class TrainResult:
    step: int
    model_dir: Path
    last_losses: dict[str, float]
    metrics: dict | None


@contextmanager
def _distributed() -> Iterator[str]:
    """Environment for DeepSpeed: the CPU accelerator and, when no launcher set one up, a
    one-process world that is torn down afterwards (its variables, its gloo store and
    DeepSpeed's cached groups), so a process that trains in-process (the retraining,
    ``build_default``'s stages, tests) can train again and leaks no port to later runs or
    to the processes it starts. Yields the communication backend."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    wanted = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": ""}
    added = [key for key in wanted if key not in os.environ]
    for key in added:
        os.environ[key] = wanted[key] or str(_free_port())
    try:
        yield "nccl" if torch.cuda.is_available() else "gloo"
    finally:
        if added:
            if dist.is_initialized():  # through DeepSpeed, which also drops the groups it cached
                import deepspeed.comm  # imported by _run already (after DS_ACCELERATOR is set), never before

                deepspeed.comm.destroy_process_group()
            for key in added:
                os.environ.pop(key, None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deepspeed_config(config: TrainConfig, cpu: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": config.batch_size,
        "gradient_accumulation_steps": config.grad_accumulation,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": config.lr, "betas": list(config.betas), "weight_decay": config.weight_decay,
                       "torch_adam": cpu},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {"total_num_steps": config.steps, "warmup_min_lr": 0.0, "warmup_max_lr": config.lr,
                       "warmup_num_steps": min(config.warmup_steps, max(config.steps - 1, 1)),
                       "warmup_type": "linear"},
        },
        "gradient_clipping": config.grad_clip,
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": config.precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_bundle(config: TrainConfig, records) -> MediSee:
    """The model to train: a preset (tiny: with a tokenizer fitted to the data), a
    checkpoint, or the bundled default. The tokenizer is fixed once per run."""
    tokenizer_dir = config.output_dir / "tokenizer"
    if config.init.startswith("preset:"):
        model_config = preset(config.init.split(":", 1)[1])
        if tokenizer_dir.is_dir():
            tokenizer = load_tokenizer(tokenizer_dir)
        elif config.train_tokenizer:
            tokenizer = train_bpe_tokenizer(_corpus(records), model_config.text.vocab_size - model_config.num_candidates,
                                            model_config.candidate_tokens)
        else:
            tokenizer = None
        bundle = build_random(model_config, seed=config.seed, tokenizer=tokenizer)
        bundle.tokenizer.save_pretrained(str(tokenizer_dir))
        return bundle
    if config.init.startswith("checkpoint:"):
        path = config.init.split(":", 1)[1]
        if config.model_changes:
            return extend_checkpoint(path, config.model_changes, seed=config.seed)
        return load_checkpoint(path)
    if config.init == "default":
        return load_model("default").bundle
    raise ValueError(f"init must be preset:NAME, checkpoint:PATH or default, got {config.init!r}")


def _corpus(records) -> list[str]:
    lines = queries.corpus_lines()
    for record in records:
        lines.extend([record.long, record.short, record.explanation, record.class_text])
    return [line for line in lines if line]


def read_sources(config: TrainConfig):
    sources = {}
    for i, source in enumerate(config.train):
        reader = read_samed2d_map if source.kind == "samed2d" else read_mlmr_jsonl
        records = reader(source.path)
        if source.modality is not None:
            records = [r for r in records if r.extra.get("modality") == source.modality]
            if not records:
                raise ValueError(f"{source.path}: no {source.modality} records to train on")
        if source.kind == "mimo":  # the four MIMOSeg perspectives over the file's present targets
            records = mimo.instructions(records, "train", random.Random(config.seed), pairs=source.pairs)
            if source.perspectives is not None:
                records = [r for r in records if r.extra["perspective"] in source.perspectives]
        if source.kind == "requests":  # the file's targets asked as people ask (and structures outside the catalogue)
            records = requests.instructions(records, random.Random(config.seed))
        if source.noise > 0:
            records = [dataclasses.replace(r, extra={**r.extra, "noise": source.noise}) for r in records]
        if source.only is not None:
            records = [r for r in records if r.absent == (source.only == "absent")]
            if not records:
                raise ValueError(f"{source.path}: no {source.only} records to train on")
        if not records:
            raise ValueError(f"{source.path}: no records to train on")
        label = f"{i}:{source.path.name}" + ("" if source.kind == "mlmr" else f":{source.kind}")
        label += "" if not source.noise else f":noise{source.noise:g}"
        label += "" if source.perspectives is None else ":" + "+".join(source.perspectives)
        label += "" if source.modality is None else f":{source.modality}"
        sources[label + ("" if source.only is None else f":{source.only}")] = (records, source.weight)
    return sources


def run(config: TrainConfig, show_progress: bool = True) -> TrainResult:
    with _distributed() as backend:
        return _run(config, show_progress, backend)


def _run(config: TrainConfig, show_progress: bool, backend: str) -> TrainResult:
    # deepspeed picks its accelerator when imported, so only after _distributed() set DS_ACCELERATOR
    import deepspeed

    clear_stale_build_locks()  # DeepSpeed builds its communication extension here
    deepspeed.init_distributed(dist_backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    is_main = rank == 0
    barrier = dist.barrier if world > 1 else (lambda: None)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    if is_main:
        write_json(config.output_dir / "train_config.json", to_dict(config))

    sources = read_sources(config)
    all_records = [r for records, _ in sources.values() for r in records]
    bundle = build_bundle(config, all_records)
    _set_trainable(bundle, config)
    cpu = not torch.cuda.is_available()
    engine, _, _, scheduler = deepspeed.initialize(
        model=bundle.model,
        model_parameters=[p for p in bundle.model.parameters() if p.requires_grad],
        config=deepspeed_config(config, cpu),
    )
    state = checkpoints.read_state(config.output_dir)
    start = 0
    if state is not None:
        engine.load_checkpoint(str(checkpoints.checkpoint_root(config.output_dir)), tag=state.tag)
        start = state.step
        log.info("resuming from %s (step %d of %d)", state.tag, start, config.steps)
    history = state.history if state else []
    sampler, structures = _sampler(config, sources, all_records, bundle, rank, start)

    weights = dataclasses.replace(bundle.config.loss, **(config.loss_weights or {}))
    bundle.model.train()
    log_file = config.output_dir / "log.jsonl"
    bar = tqdm(total=config.steps, initial=start, disable=not (show_progress and is_main), desc="training",
               dynamic_ncols=True)
    losses: dict[str, float] = {}
    for step in range(start, config.steps):
        rng = random.Random(config.seed * 1_000_003 + step * 101 + rank)
        torch.manual_seed(config.seed + step)
        generator = torch.Generator().manual_seed(config.seed + step)
        started = time.perf_counter()
        totals: dict[str, float] = {}
        for _ in range(config.grad_accumulation):
            drawn = [next(sampler) for _ in range(config.batch_size)]
            terms = _loss_terms(bundle, config, drawn, rng, generator, weights, structures)
            engine.backward(terms["total"])
            engine.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / config.grad_accumulation
        losses = {k: round(v, 5) for k, v in totals.items()}
        entry = {"step": step + 1, **losses, "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3)}
        if is_main:
            _log_step(config, entry, losses, log_file, bar)
        last = step + 1 == config.steps
        if config.eval_every and (step + 1) % config.eval_every == 0 and not last and is_main:
            history.append({"step": step + 1, **_evaluate(bundle, config, f"eval-step{step + 1}")})
            bundle.model.train()
        if (step + 1) % config.save_every == 0 or last:
            _save(engine, bundle, config, step + 1, history, is_main, barrier)
    bar.close()
    cache, bundle.model.mask_head.frozen_cache = bundle.model.mask_head.frozen_cache, None
    if cache is not None:
        log.info("image embeddings: %d slices encoded, %.0f%% of lookups remembered", cache.misses, 100 * cache.hit_rate())
    metrics = None
    if is_main and config.val is not None:
        metrics = _evaluate(bundle, config, "eval")
    barrier()
    return TrainResult(step=config.steps, model_dir=config.output_dir / "model", last_losses=losses, metrics=metrics)


def _set_trainable(bundle: MediSee, config: TrainConfig) -> None:
    """What the phase trains (and ``config.freeze`` keeps frozen); a frozen image encoder remembers its embeddings."""
    if config.phase == "segmentation":  # the mask head alone learns box-prompted segmentation
        trainable = train_only(bundle.model, "mask_head.")
    elif config.phase == "patches":  # the patch head alone learns where each structure is
        if bundle.model.patch_head is None:
            raise ValueError("phase patches needs a model with patch_classes (model_changes: {patch_classes: [...]})")
        trainable = train_only(bundle.model, "patch_head.")
    elif config.phase == "queries":  # the query head alone learns which structures a question asks for
        if bundle.model.query_head is None:
            raise ValueError("phase queries needs a model with query tags (model_changes: {query_tags: true})")
        trainable = train_only(bundle.model, "query_head.")
    elif config.phase == "masks":  # the mask decoder alone learns from the answers' seg tokens
        trainable = train_only(bundle.model, MASK_DECODER)
    else:
        trainable = configure_trainable(bundle.model, train_encoders=config.phase == "pretrain")
    if config.freeze:
        trainable = freeze(bundle.model, config.freeze)
    if not any(p.requires_grad for p in bundle.model.mask_head.sam.vision_encoder.parameters()):
        bundle.model.mask_head.frozen_cache = FrozenEncoderCache()
        log.info("the image encoder is frozen: each slice's image embedding is computed once and remembered")
    log.info("model %s: %s parameters, %s trainable (%d tensors), phase %s", bundle.config.name,
             f"{count_parameters(bundle.model):,}", f"{count_parameters(bundle.model, True):,}", len(trainable),
             config.phase)


def _sampler(config: TrainConfig, sources: dict, all_records: list, bundle: MediSee, rank: int,
             start: int) -> tuple[MixedSampler, dict]:
    """The mixed sampler, advanced past the draws of ``start`` completed steps, and each slice's
    structures for the patch head in per-sample phases (per-image phases have them in the group)."""
    per_image = config.phase in ("segmentation", "patches")
    units = {k: group_by_image(v[0]) if per_image else v[0] for k, v in sources.items()}
    structures = slice_structures(all_records) if bundle.model.patch_head is not None and not per_image else {}
    sampler = MixedSampler(units, {k: v[1] for k, v in sources.items()}, seed=config.seed + rank)
    per_step = config.batch_size * config.grad_accumulation
    for _ in range(start * per_step):  # replay the draws of the completed steps
        next(sampler)
    return sampler, structures


def _loss_terms(bundle: MediSee, config: TrainConfig, drawn: list, rng: random.Random, generator: torch.Generator,
                weights, structures: dict) -> dict[str, torch.Tensor]:
    """The phase's loss on one micro-batch of drawn units (records, or image groups in per-image phases)."""
    if config.phase == "segmentation":
        images, masks, boxes = zip(*(image_targets(group) for group in drawn))
        return bundle.segmentation_loss(list(images), list(masks), list(boxes), weights, config.box_jitter, generator)
    if config.phase == "patches":
        images, masks, _ = zip(*(image_targets(group) for group in drawn))
        on_slice = [{r.class_text: m for r, m in zip(group, group_masks)} for group, group_masks in zip(drawn, masks)]
        return bundle.patch_loss(list(images), on_slice, weights)
    if config.phase == "queries":
        known = [r for r in drawn if asked_structures(r) is not None]
        return bundle.query_loss([training_query(r, rng, config.query_kind) for r in known],
                                 [asked_structures(r) for r in known], weights)
    samples = [to_training_sample(r, rng, config.query_kind, with_plain_query=config.phase == "finetune",
                                  structures=structures.get(slice_key(r)))
               for r in drawn]
    return bundle.loss(samples, weights, config.gt_box_prompts, generator)


def _log_step(config: TrainConfig, entry: dict, losses: dict[str, float], log_file: Path, bar: tqdm) -> None:
    with log_file.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("total", "ce", "dice", "giou")})
    bar.update(1)
    if entry["step"] % config.log_every == 0:
        log.info("step %d/%d %s lr %.2e", entry["step"], config.steps,
                 " ".join(f"{k} {v:.4f}" for k, v in losses.items()), entry["lr"])


def _save(engine, bundle: MediSee, config: TrainConfig, step: int, history: list, is_main: bool, barrier) -> None:
    """The resumable DeepSpeed checkpoint and, on the main process, the exported model."""
    checkpoints.save(engine, config.output_dir, checkpoints.RunState(step=step, tag=f"step{step:07d}", history=history),
                     is_main, barrier, config.keep_checkpoints)
    if is_main:
        save_checkpoint(bundle, config.output_dir / "model",
                        metadata={"trained": True, "step": step, "phase": config.phase,
                                  "description": f"MediSee {bundle.config.name}, {config.phase} step {step}"})


def _evaluate(bundle: MediSee, config: TrainConfig, name: str) -> dict:
    bundle.model.eval()
    records = read_mlmr_jsonl(config.val)[: config.val_limit] if config.val_limit else read_mlmr_jsonl(config.val)
    metrics = evaluate(Predictor(bundle), records, config.output_dir / name)
    overall = metrics.get("overall", {})
    log.info("evaluation on %d records: %s", len(records),
             " ".join(f"{k} {v:.3f}" for k, v in overall.items() if isinstance(v, float)))
    return overall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="training.train", description=__doc__)
    parser.add_argument("--config", required=True, help="training config file (YAML, see training/configs/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the launcher
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[medisee] %(message)s")
    try:  # a config the code cannot train (unknown phase, missing parts, bad data) is one line
        result = run(load_config(args.config), show_progress=not args.no_progress)
    except (ValueError, OSError) as err:
        print(f"training.train: error: {err}", file=sys.stderr)
        return 2
    print(f"trained {result.step} steps; model in {result.model_dir}")
    if result.metrics:
        print("validation: " + ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

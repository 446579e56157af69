"""Training step time with the SAM-like image encoder training (baseline) against frozen
with its embeddings remembered (``FrozenEncoderCache``), measured in the same run.

The default model's stages 1, 2 and 5 freeze the encoder after stage 0; the demo training
split has a few hundred slices drawn thousands of times, so after the first pass every
lookup is a hit. Both variants train the same tiny model on the same batches of synthetic
slices (``--slices`` distinct ones, drawn at random), on whatever device torch picks.

    .venv/bin/python benchmarks/bench_training.py                # tiny preset, CPU
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medisee.builder import build_random
from medisee.data.loader import to_training_sample
from medisee.data.records import Record
from medisee.model.frozen_encoder_cache import FrozenEncoderCache
from medisee.model.trainable import configure_trainable, freeze


def synthetic_records(folder: Path, count: int) -> list[Record]:
    """Bright ellipses on noise, one "left kidney" target per slice."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    records = []
    for i in range(count):
        cx, cy = rng.integers(70, 186, size=2)
        mask = ((xx - cx) / 30) ** 2 + ((yy - cy) / 20) ** 2 <= 1
        image = np.clip(40 + 10 * rng.standard_normal((256, 256)) + 150 * mask, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"img{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"mask{i}.png")
        ys, xs = np.nonzero(mask)
        records.append(Record(folder / f"img{i}.png", folder / f"mask{i}.png", "left kidney",
                              "Which organ filters the blood and could hold a stone?", "Which organ filters blood?",
                              (xs.min() / 256, ys.min() / 256, (xs.max() + 1) / 256, (ys.max() + 1) / 256),
                              "The kidney filters blood into urine."))
    return records


def seconds_per_step(records: list[Record], frozen: bool, steps: int, batch: int) -> float:
    bundle = build_random("tiny", seed=0)
    configure_trainable(bundle.model, train_encoders=True)  # the pretrain phase of the tiny model
    if frozen:
        freeze(bundle.model, ("mask_head.sam.vision_encoder.",))
        bundle.model.mask_head.frozen_cache = FrozenEncoderCache()
    optimizer = torch.optim.AdamW([p for p in bundle.model.parameters() if p.requires_grad], lr=1e-4)
    rng = random.Random(0)
    bundle.model.train()
    times = []
    for _ in range(steps):
        samples = [to_training_sample(rng.choice(records), rng) for _ in range(batch)]
        started = time.perf_counter()
        bundle.loss(samples)["total"].backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return statistics.median(times[steps // 2:])  # the second half: the cache is warm by then


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=16, help="distinct training slices")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        records = synthetic_records(Path(folder), args.slices)
        training = seconds_per_step(records, frozen=False, steps=args.steps, batch=args.batch)
        frozen = seconds_per_step(records, frozen=True, steps=args.steps, batch=args.batch)
    print(json.dumps({"encoder_trains_s_per_step": round(training, 4), "frozen_cached_s_per_step": round(frozen, 4),
                      "speedup": round(training / frozen, 2)}))


if __name__ == "__main__":
    main()

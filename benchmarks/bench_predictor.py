"""Predictor latency and throughput, each goal measured against its baseline in the same run.

(a) vs (b): per-query latency of generate-then-decode with no embedding cache (how the
reference code answers every query) against the mask-only fast path with a warm cache.
(c) vs (d): slices per second over a 32-slice volume, one slice at a time against batched.

    .venv/bin/python benchmarks/bench_predictor.py                      # tiny preset, CPU
    .venv/bin/python benchmarks/bench_predictor.py --preset medisee-7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from medisee.builder import build_random
from medisee.predictor import Predictor

QUERIES = [
    "which organ filters the blood and could hold a stone?",
    "where is the largest solid organ of the abdomen?",
    "which structure pumps blood through the body?",
    "segment the organ that removes old red blood cells",
]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def phantom_volume(slices: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    volume = np.empty((slices, size, size), np.uint8)
    for z in range(slices):
        organ = ((xx - size * 0.6) / (size * 0.2)) ** 2 + ((yy - size * 0.45) / (size * (0.1 + 0.1 * z / slices))) ** 2 <= 1
        volume[z] = np.clip(50 + 15 * rng.standard_normal((size, size)) + 120 * organ, 0, 255)
    return volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "medisee-7b"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--size", type=int, default=256, help="slice width and height in pixels")
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generation length of the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    bundle = build_random(args.preset, seed=0)
    bundle.model.to(device=args.device, dtype=getattr(torch, args.dtype))
    volume = phantom_volume(args.slices, args.size)
    image = volume[args.slices // 2]

    # (a) reference style: every query encodes the image again and generates its answer
    reference = Predictor(bundle, score_threshold=0.0, cache_size=0, batch_size=1, max_new_tokens=args.max_new_tokens)
    reference.predict(image, QUERIES[0], mode="full")  # warm-up (allocations, kernels)
    ref_times = [timed(lambda q=q: reference.predict(image, q, mode="full"), args.device)
                 for _ in range(args.repeats) for q in QUERIES]
    # (b) mask-only fast path, embeddings cached after the first query on the slice
    fast = Predictor(bundle, score_threshold=0.0, cache_size=64, batch_size=1)
    fast.predict(image, QUERIES[0], mode="fast")
    fast_times = [timed(lambda q=q: fast.predict(image, q, mode="fast"), args.device)
                  for _ in range(args.repeats) for q in QUERIES]

    # (c)/(d) slice throughput over the volume, no cache so every slice is encoded
    def throughput(batch_size: int) -> float:
        predictor = Predictor(bundle, score_threshold=0.0, cache_size=0, batch_size=batch_size)
        predictor.predict_volume(volume[: min(4, args.slices)], QUERIES[0], mode="fast")  # warm-up
        seconds = min(timed(lambda: predictor.predict_volume(volume, QUERIES[0], mode="fast"), args.device)
                      for _ in range(max(1, args.repeats - 1)))
        return args.slices / seconds

    unbatched = throughput(1)
    batched = throughput(args.batch_size)

    ref_ms, fast_ms = statistics.median(ref_times) * 1e3, statistics.median(fast_times) * 1e3
    figures = {
        "preset": args.preset, "device": args.device, "dtype": args.dtype, "slice_size": args.size,
        "torch_threads": torch.get_num_threads(),
        "latency_generate_then_decode_ms": round(ref_ms, 2),
        "latency_fast_path_warm_cache_ms": round(fast_ms, 2),
        "latency_ratio": round(ref_ms / fast_ms, 2),
        "slices_per_s_unbatched": round(unbatched, 2),
        f"slices_per_s_batched_{args.batch_size}": round(batched, 2),
        "throughput_ratio": round(batched / unbatched, 2),
    }
    print(f"MediSee predictor benchmark: preset {args.preset}, {args.device} {args.dtype}, "
          f"{args.size}x{args.size} slices, {torch.get_num_threads()} threads")
    print(f"  per-query latency, generate-then-decode, no cache ({args.max_new_tokens} tokens): {ref_ms:9.1f} ms")
    print(f"  per-query latency, mask-only fast path, warm cache:             {fast_ms:9.1f} ms")
    print(f"  latency ratio (baseline / fast path):                           {ref_ms / fast_ms:9.1f}x")
    print(f"  {args.slices}-slice volume, unbatched:                                {unbatched:9.1f} slices/s")
    print(f"  {args.slices}-slice volume, batch {args.batch_size}:                                  {batched:9.1f} slices/s")
    print(f"  throughput ratio (batched / unbatched):                         {batched / unbatched:9.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()

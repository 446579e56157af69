"""One GPU run that says whether the medisee-7b preset works on a card and what it costs.

Builds the model at full size with random weights (nothing is downloaded: a machine without
internet runs it), then per precision (bfloat16, float32, bitsandbytes 8-bit and 4-bit):
the build and load time, one question in each mode (full: generated answer; fast: masks
only), the slices per second of a 32-slice volume in batches, and the peak GPU memory.
Prints one table (and writes it as JSON with --json). Run through benchmarks/gpu_check.sh,
which caps it at 8 minutes.

    bash benchmarks/gpu_check.sh              # CUDA machine: medisee-7b, every precision
    bash benchmarks/gpu_check.sh --dry-run    # the same steps with the tiny preset on the CPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_predictor import QUERIES, phantom_volume, sync, timed
from medisee.builder import tokenizer_corpus
from medisee.config import preset
from medisee.predictor import Predictor
from medisee.quantize import QUANTISED, quantise_language_model, require_quantisation
from medisee.release import build_uninitialised
from medisee.tokenizer import add_candidate_tokens, load_tokenizer, write_sentencepiece_tokenizer

PRECISIONS = ("bfloat16", "float32", "8bit", "4bit")
COLUMNS = ("precision", "load s", "full s", "fast s", "slices/s", "peak GiB", "note")


def random_model(config, tokenizer, precision: str, device: str, seed: int = 0):
    """The preset at full size with seeded random weights, built on ``device`` without
    initialisation and filled there (a 7B model in seconds); 8/4-bit quantised after."""
    dtype = torch.float32 if precision == "float32" else torch.bfloat16
    bundle = build_uninitialised(config, tokenizer, dtype, device)
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, param in bundle.model.named_parameters():
            if param.ndim == 1 and "norm" in name:
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=generator)
    if precision in QUANTISED:
        quantise_language_model(bundle.model, precision, device)
    bundle.model.eval()
    return bundle


def measure(config, tokenizer, precision: str, device: str, volume: np.ndarray, batch_size: int,
            max_new_tokens: int | None = None) -> dict:
    """One precision's row: load, one query per mode, 32-slice throughput, peak memory."""
    row = {"precision": precision}
    if precision in QUANTISED:
        try:
            require_quantisation(precision, device)
        except ValueError as err:
            return row | {"note": f"skipped: {err}"}
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
    start = time.perf_counter()
    bundle = random_model(config, tokenizer, precision, device)
    sync(device)
    row["load s"] = time.perf_counter() - start
    if cuda:  # the peak of answering: the weights as loaded plus the work (8/4-bit are built in bf16 first)
        torch.cuda.reset_peak_memory_stats()
    image = volume[len(volume) // 2]
    single = Predictor(bundle, cache_size=0, batch_size=1, max_new_tokens=max_new_tokens)
    single.predict(image, QUERIES[1], mode="fast")  # warm-up: kernels, allocator
    row["full s"] = timed(lambda: single.predict(image, QUERIES[0], mode="full"), device)
    row["fast s"] = timed(lambda: single.predict(image, QUERIES[0], mode="fast"), device)
    batched = Predictor(bundle, cache_size=0, batch_size=batch_size)
    seconds = timed(lambda: batched.predict_volume(volume, QUERIES[2], mode="fast"), device)
    row["slices/s"] = len(volume) / seconds
    row["peak GiB"] = torch.cuda.max_memory_allocated() / 1024 ** 3 if cuda else None
    row["note"] = f"batch {batch_size}" if cuda else "CPU: no GPU memory to measure"
    return row


def table(rows: list[dict], title: str) -> str:
    def cell(value) -> str:
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = [title, "  " + " | ".join(f"{c:>9s}" for c in COLUMNS[:-1]) + " | note"]
    for row in rows:
        lines.append("  " + " | ".join(f"{cell(row.get(c)):>9s}" for c in COLUMNS[:-1]) + f" | {row.get('note', '')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the tiny preset on the CPU: checks the script, fast")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated, from " + ", ".join(PRECISIONS))
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--size", type=int, default=512, help="slice width and height in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run it on a GPU machine, or check the script with --dry-run")
    name, device = ("tiny", "cpu") if args.dry_run else ("medisee-7b", "cuda")
    config = preset(name)
    # the dry run checks the steps, not the speed: few small slices, short answers
    size, slices, tokens = (64, min(args.slices, 4), 8) if args.dry_run else (args.size, args.slices, None)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as folder:  # LLaVA-Med's kind of tokenizer, trained here (no download)
        tokenizer = load_tokenizer(write_sentencepiece_tokenizer(Path(folder), tokenizer_corpus(), 1000))
        add_candidate_tokens(tokenizer, config.candidate_tokens)
        volume = phantom_volume(slices, size)
        rows = [measure(config, tokenizer, p.strip(), device, volume, args.batch_size, tokens)
                for p in args.precisions.split(",")]
    card = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(table(rows, f"MediSee GPU check: preset {name}, random weights, {card}, {slices} slices of "
                      f"{size}x{size}, torch {torch.__version__}"))
    if args.json:
        Path(args.json).write_text(json.dumps({"card": card, "preset": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Slices per second for a 64-slice volume answered through the MONAI Label server.

Starts the real server (the bundled default model unless --weights), loads the model with
a one-slice request, then times ``slice: all`` on a 64-slice CT phantom:

  cold   the first request for the volume (every slice encoded),
  warm   the same volume with another question (encodings from the server's cache),
  local  the same work in this process without HTTP (the baseline for server overhead).

Ratios are against measurements of the same run.

    .venv/bin/python benchmarks/bench_server.py
    .venv/bin/python benchmarks/bench_server.py --mode full --slices 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import requests
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medisee.data.demo.ct_phantom import generate_phantom  # noqa: E402
from medisee.imaging import read_image  # noqa: E402
from medisee.models import load_model  # noqa: E402
from medisee.predictor import Predictor  # noqa: E402
from medisee.study import StudyQuestion, ask_study  # noqa: E402
from tests.support.server import monailabel_server  # noqa: E402

QUESTIONS = ("Where is the liver?", "Which organ filters the blood?")


def request(url: str, image: str, query: str, slices: str, mode: str) -> tuple[float, dict]:
    started = time.perf_counter()
    response = requests.post(f"{url}/infer/medisee", params={"image": image, "output": "json"},
                             data={"params": json.dumps({"query": query, "slice": slices, "mode": mode})}, timeout=1800)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=160, help="slice width and height in pixels")
    parser.add_argument("--mode", default="fast", choices=["fast", "full"])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medisee-bench-") as tmp:
        work = Path(tmp)
        studies = work / "studies"
        studies.mkdir()
        phantom = generate_phantom(0, shape=(args.slices, args.size, args.size))
        volume = studies / "ct-bench.nii.gz"
        sitk.WriteImage(phantom.to_medical_image().to_sitk(), str(volume), useCompression=True)
        conf = {"weights": args.weights, "batch_size": str(args.batch_size)}
        with monailabel_server(studies, work, conf=conf) as server:
            load_s, _ = request(server.url, "ct-bench", "warm up", "0", args.mode)
            cold_s, cold = request(server.url, "ct-bench", QUESTIONS[0], "all", args.mode)
            warm_s, warm = request(server.url, "ct-bench", QUESTIONS[1], "all", args.mode)

        predictor = Predictor(load_model(args.weights).bundle, batch_size=args.batch_size)
        image = read_image(volume)
        started = time.perf_counter()
        ask_study(predictor, image, StudyQuestion(QUESTIONS[0], slices="all", mode=args.mode))
        local_s = time.perf_counter() - started

    rate = {name: args.slices / seconds for name, seconds in (("cold", cold_s), ("warm", warm_s), ("local", local_s))}
    print(f"{args.slices} slices of {args.size}x{args.size}, mode {args.mode}, weights {args.weights}, batch {args.batch_size}")
    print(f"  model load + first slice  {load_s:7.2f} s")
    print(f"  server, cold cache        {cold_s:7.2f} s  {rate['cold']:7.2f} slices/s  (server-side {cold['timing']['infer_s']:.2f} s)")
    print(f"  server, warm cache        {warm_s:7.2f} s  {rate['warm']:7.2f} slices/s  (server-side {warm['timing']['infer_s']:.2f} s)")
    print(f"  in-process, cold cache    {local_s:7.2f} s  {rate['local']:7.2f} slices/s")
    print(f"  warm / cold speed-up      {rate['warm'] / rate['cold']:7.2f}x")
    print(f"  server / in-process       {rate['cold'] / rate['local']:7.2f}x  (HTTP, NIfTI I/O and JSON overhead)")


if __name__ == "__main__":
    main()

"""Slices per second for a 64-slice volume answered through the MONAI Label server.

Starts the real server (the bundled default model unless --weights), loads the model with
a one-slice request, then times ``slice: all`` on a 64-slice CT phantom:

  cold   the first request for the volume (every slice encoded),
  warm   the same volume with another question (encodings from the server's cache),
  local  the same work in this process without HTTP (the baseline for server overhead).

Ratios are against measurements of the same run.

``--responsiveness``: how long uploads, label saves and ``/info/`` take while a 64-slice
volume is being answered in full mode, through the MediSee gateway and through MONAI
Label's own endpoints (the server as it was before the gateway), each beside the same
calls on an idle server (goal: p95 under 1 s).

    .venv/bin/python benchmarks/bench_server.py
    .venv/bin/python benchmarks/bench_server.py --mode full --slices 64
    .venv/bin/python benchmarks/bench_server.py --responsiveness
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
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
from tests.support.studies import corrected_label, write_phantom  # noqa: E402

QUESTIONS = ("Where is the liver?", "Which organ filters the blood?")


def request(url: str, image: str, query: str, slices: str, mode: str) -> tuple[float, dict]:
    started = time.perf_counter()
    response = requests.post(f"{url}/infer/medisee", params={"image": image, "output": "json"},
                             data={"params": json.dumps({"query": query, "slice": slices, "mode": mode})}, timeout=1800)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def other_requests(url: str, small: Path, label: Path, rounds: int, prefix: str) -> dict[str, list[float]]:
    """Seconds per ``/info/``, study upload (ids ``prefix-N``) and label save, ``rounds`` of each in turn."""
    times: dict[str, list[float]] = {"info": [], "upload": [], "label save": []}
    names = json.dumps({"label_names": {"liver": 1}})
    for number in range(rounds):
        started = time.perf_counter()
        requests.get(f"{url}/info/", timeout=300).raise_for_status()
        times["info"].append(time.perf_counter() - started)
        started = time.perf_counter()
        with open(small, "rb") as handle:
            requests.put(f"{url}/datastore/image", params={"image": f"{prefix}-{number}"},
                         files={"file": (small.name, handle)}, timeout=300).raise_for_status()
        times["upload"].append(time.perf_counter() - started)
        started = time.perf_counter()
        with open(label, "rb") as handle:
            requests.put(f"{url}/datastore/label", params={"image": f"{prefix}-{number}", "tag": "final"},
                         data={"params": names}, files={"label": (label.name, handle)}, timeout=300).raise_for_status()
        times["label save"].append(time.perf_counter() - started)
    return times


def responsiveness(work: Path, studies: Path, weights: str, rounds: int) -> None:
    """Other requests on an idle server and during a full-mode 64-slice answer, with and
    without the gateway."""
    small = write_phantom(1, work, "small")
    label = corrected_label(1, work, {1: "liver"})
    print(f"latency of other requests (p50 / p95 / max, s; {rounds} of each) while a 64-slice volume is answered "
          "in full mode:")
    for gateway in (False, True):
        server_dir = work / ("gateway" if gateway else "monai-label")
        own_studies = shutil.copytree(studies, server_dir / "studies")  # each server uploads into its own
        with monailabel_server(own_studies, server_dir, conf={"weights": weights}, gateway=gateway) as server:
            request(server.url, "ct-bench", "warm up", "0", "full")
            idle = other_requests(server.url, small, label, rounds, "idle")
            answer = threading.Thread(target=request, args=(server.url, "ct-bench", QUESTIONS[0], "all", "full"))
            answer.start()
            time.sleep(2.0)  # the volume is being answered
            busy = other_requests(server.url, small, label, rounds, "busy") if answer.is_alive() else {}
            answer.join()
        name = "MediSee gateway" if gateway else "MONAI Label's own endpoints"
        for what in idle:
            print(f"  {name:28s} {what:10s} idle {_summary(idle[what])}   busy {_summary(busy.get(what, []))}")


def _summary(values: list[float]) -> str:
    if not values:
        return "    (the answer finished first)"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):6.2f} / {p95:6.2f} / {ordered[-1]:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=160, help="slice width and height in pixels")
    parser.add_argument("--mode", default="fast", choices=["fast", "full"])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--responsiveness", action="store_true",
                        help="time other requests while a volume is answered, with and without the gateway")
    parser.add_argument("--rounds", type=int, default=5, help="with --responsiveness: calls of each kind")
    args = parser.parse_args()
    if args.responsiveness:
        with tempfile.TemporaryDirectory(prefix="medisee-bench-") as tmp:
            work = Path(tmp)
            studies = work / "studies"
            studies.mkdir()
            phantom = generate_phantom(0, shape=(args.slices, args.size, args.size))
            sitk.WriteImage(phantom.to_medical_image().to_sitk(), str(studies / "ct-bench.nii.gz"), useCompression=True)
            responsiveness(work, studies, args.weights, args.rounds)
        return

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

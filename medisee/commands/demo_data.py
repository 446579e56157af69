"""``medisee demo-data``: generate the offline demo dataset (CT phantoms and augmented MNI152 brains).

Writes DICOM and NIfTI volumes, PNG slices with binary masks, ``train/val/test.jsonl`` in
MLMR-SD format and ``manifest.json`` into a new folder; nothing is downloaded."""

from __future__ import annotations

import argparse
import logging

from ..data.demo.brain import TemplateNotFoundError
from ..data.demo.build import build_demo_dataset

log = logging.getLogger("medisee.demo")


def register(commands) -> None:
    parser = commands.add_parser(
        "demo-data", help="generate an offline demo dataset (synthetic CT, augmented MNI152 brain MRI)",
        description="Generate a small training/evaluation dataset without downloading anything: synthetic "
        "abdominal/thoracic CT phantoms with ten labelled structures and augmented copies of the MNI152 brain "
        "template (grey matter, white matter, lateral ventricles, brain). Output: volumes (DICOM, NIfTI), PNG "
        "slices and masks, train/val/test.jsonl (MLMR-SD) and manifest.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same dataset")
    parser.add_argument("--patients", type=_count, default=20, help="number of CT phantom patients")
    parser.add_argument("--slices-per-patient", type=_positive, default=20, help="axial slices per CT patient (of 40)")
    parser.add_argument("--brain-patients", type=_count, default=10, help="number of augmented brain MRI patients")
    parser.add_argument("--absent-ratio", type=float, default=0.25,
                        help="absent-target (negative) records per present-target record")
    parser.add_argument("--no-dicom", action="store_true", help="skip the DICOM copies of the CT volumes (saves disk)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous dataset in --out (removes only the files a build writes)")
    parser.set_defaults(run=run)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    log.info("generating %d CT and %d brain patients into %s (seed %d)", args.patients, args.brain_patients,
             args.out, args.seed)
    try:
        result = build_demo_dataset(
            args.out, seed=args.seed, patients=args.patients, slices_per_patient=args.slices_per_patient,
            brain_patients=args.brain_patients, absent_ratio=args.absent_ratio, write_dicom=not args.no_dicom,
            overwrite=args.overwrite,
        )
    except TemplateNotFoundError as err:
        raise ValueError(f"{err} (or use --brain-patients 0)") from None
    except FileExistsError as err:  # a user's mistake, reported as bad input
        raise ValueError(str(err)) from None
    totals = result["totals"]
    print(f"demo dataset: {totals['records']} records ({totals['absent']} absent) from {totals['slices']} slices "
          f"in {result['seconds']:.1f} s -> {result['out']}")
    for split, counts in result["splits"].items():
        print(f"  {split}: {counts['records']} records ({counts['absent']} absent), {counts['slices']} slices, "
              f"{len(counts['patients'])} patients -> {result['jsonl'][split]}")
    return 0

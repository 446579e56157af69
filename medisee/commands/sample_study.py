"""``medisee sample-study``: the small study a fresh MediSee server serves (synthetic CT + MNI152 brain).

Nothing is downloaded; a second run keeps what is already there (see
:mod:`medisee.data.demo.sample_study`)."""

from __future__ import annotations

import argparse
import time

from ..data.demo.brain import TemplateNotFoundError
from ..data.demo.sample_study import DEFAULT_SLICES, MAX_SLICES, MIN_SLICES, build_sample_study


def register(commands) -> None:
    parser = commands.add_parser(
        "sample-study", help="write the sample study (synthetic CT as DICOM + NIfTI, MNI152 brain as NIfTI)",
        description="Write a small sample study for MediSee's MONAI Label server, without downloading anything: "
        "a synthetic abdominal/thoracic CT as a DICOM series (DIR/dicom/ct-phantom/, e.g. to store in Orthanc) and "
        "as NIfTI with the same geometry (DIR/studies/ct-phantom.nii.gz), and the MNI152 brain template "
        "(DIR/studies/brain-mni.nii.gz). DIR/studies is ready to serve: "
        "python -m monailabel_app.serve --studies DIR/studies. Files already there and up to date are kept.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", default=argparse.SUPPRESS,
                        help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="CT phantom seed: the same seed gives the same CT")
    parser.add_argument("--slices", type=_slices, default=DEFAULT_SLICES,
                        help="axial CT slices over the phantom's 200 mm (40 = 5 mm, 64 = 3.125 mm)")
    parser.set_defaults(run=run)


def _slices(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not MIN_SLICES <= value <= MAX_SLICES:
        raise argparse.ArgumentTypeError(f"expected {MIN_SLICES} to {MAX_SLICES} slices, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    try:
        study = build_sample_study(args.out, seed=args.seed, slices=args.slices)
    except TemplateNotFoundError as err:
        raise ValueError(f"{err} (needed for the brain of the sample study)") from None
    except (FileExistsError, NotADirectoryError) as err:  # a file where a folder of the study should be
        raise ValueError(f"cannot write the sample study into {args.out}: {err.strerror}: {err.filename}") from None
    seconds = time.monotonic() - start
    print(f"sample study in {study.out} ({len(study.written)} of 3 items written, {seconds:.1f} s):")
    for label, path in (("CT, DICOM series", study.ct_dicom), ("CT, NIfTI", study.ct_nifti),
                        ("brain MRI, NIfTI", study.brain_nifti)):
        print(f"  {label:<17} {path}{'' if path in study.written else '  (kept)'}")
    print(f"serve it: python -m monailabel_app.serve --studies {study.studies}")
    return 0

"""Start the MONAI Label server with the MediSee app: the product's main job.

    .venv/bin/python -m monailabel_app.serve                      # sample study, loopback:8000
    .venv/bin/python -m monailabel_app.serve --studies /data/ct --port 8080 --conf device auto

Without ``--studies`` it serves the sample study (a synthetic CT, as NIfTI and as a DICOM
series, and the MNI152 brain), generating it on first use. The server is MONAI Label's own
(``python -m monailabel.main start_server``), run with this interpreter so that the packages
of this environment (not whatever ``python`` is on PATH) are used.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
DEFAULT_SAMPLE = APP_DIR.parent / "runs" / "sample-study"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monailabel_app.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", help="a folder of NIfTI/NRRD volumes, or a DICOMweb URL "
                        "(http://host:8042/dicom-web); default: the sample study")
    parser.add_argument("--sample-dir", type=Path, default=DEFAULT_SAMPLE, help="where the sample study is generated")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="app option, repeatable: weights, device, precision, threshold, batch_size, mode, "
                        "models_dir, retrain_steps, max_query_chars (see monailabel_app/main.py)")
    return parser


def server_command(studies: str, host: str, port: int, conf: list[tuple[str, str]]) -> list[str]:
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", studies,
               "--host", host, "--port", str(port)]
    for key, value in conf:
        command += ["--conf", key, value]
    return command


def ensure_sample_study(folder: Path) -> Path:
    """The sample study's datastore folder, generated if it is missing."""
    studies = folder / "studies"
    if not studies.is_dir() or not any(studies.glob("*.nii.gz")):
        print(f"[medisee] generating the sample study in {folder}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "medisee.cli", "sample-study", "--out", str(folder)], check=True)
    return studies


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from monailabel_app.lib.settings import AppSettings, SettingsError

    try:  # the app checks these again at start-up, but there a mistake ends in uvicorn's traceback
        AppSettings.from_conf(dict(args.conf), APP_DIR)
    except SettingsError as err:
        print(f"monailabel_app.serve: error: {err}", file=sys.stderr)
        return 2
    if args.studies is None:
        try:
            studies = str(ensure_sample_study(args.sample_dir))
        except subprocess.CalledProcessError as err:
            print(f"monailabel_app.serve: error: could not generate the sample study (exit {err.returncode})", file=sys.stderr)
            return 2
    elif args.studies.startswith(("http://", "https://")) or Path(args.studies).is_dir():
        studies = args.studies
    else:
        print(f"monailabel_app.serve: error: --studies {args.studies}: no such folder (or give a DICOMweb URL)", file=sys.stderr)
        return 2
    env = os.environ | {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    print(f"[medisee] MONAI Label + MediSee on http://{args.host}:{args.port} serving {studies}\n"
          f"[medisee] in 3D Slicer: MediSee module > Server URL http://{args.host}:{args.port} > Connect; Ctrl+C stops",
          file=sys.stderr, flush=True)
    try:
        return subprocess.call(server_command(studies, args.host, args.port, args.conf), env=env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Start the MONAI Label server with the MediSee app: the product's main job.

    .venv/bin/python -m monailabel_app.serve                      # sample study, loopback:8000
    .venv/bin/python -m monailabel_app.serve --studies /data/ct --port 8080 --conf device auto

Without ``--studies`` it serves the sample study (a synthetic CT, as NIfTI and as a DICOM
series, and the MNI152 brain), generating it on first use. The server is MONAI Label's own
(``python -m monailabel.main start_server``) with the MediSee gateway in front
(``monailabel_app.asgi``), run in place of this process with this interpreter, so that a
signal to the launcher reaches the server and the packages of this environment are used.

It listens on loopback only unless MONAI Label's authentication is configured
(MONAI_LABEL_AUTH_ENABLE=true and a Keycloak realm): see docs/SECURITY.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import monailabel

from medisee.atomic import write_text
from monailabel_app.lib.policy import GROUPS

APP_DIR = Path(__file__).resolve().parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")
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
                        "models_dir, retrain_steps, max_query_chars, max_upload_mb (default 1024), image_folders "
                        "(server folders an image id may name by path, ':'-separated), enable (endpoint groups to "
                        f"turn on, ','-separated: {', '.join(GROUPS)}); see monailabel_app/main.py")
    return parser


def server_command(studies: str, host: str, port: int, conf: list[tuple[str, str]]) -> list[str]:
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", studies,
               "--host", host, "--port", str(port), "--uvicorn_app", "monailabel_app.asgi:app",
               "--log_config", str(log_config())]
    for key, value in conf:
        command += ["--conf", key, value]
    return command


def log_config() -> Path:
    """MONAI Label's logging configuration, written once into the app's log folder (left to
    itself, MONAI Label writes a copy into the system temp folder at every start)."""
    folder = APP_DIR / "logs"
    path = folder / "logging.json"
    if not path.exists():
        template = (Path(monailabel.__file__).parent / "logging.json").read_text()
        folder.mkdir(exist_ok=True)
        write_text(path, template.replace("${LOGDIR}", str(folder)).replace("${LOGFILE}", str(folder / "app.log")))
    return path


def ensure_sample_study(folder: Path) -> Path:
    """The sample study's datastore folder, generated if it is missing."""
    studies = folder / "studies"
    if not studies.is_dir() or not any(studies.glob("*.nii.gz")):
        print(f"[medisee] generating the sample study in {folder}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "medisee.cli", "sample-study", "--out", str(folder)], check=True)
    return studies


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the settings import torch and the model library: only once the arguments parse (--help stays quick)
    from monailabel_app.lib.settings import AppSettings, SettingsError

    try:  # the app checks these again at start-up, but there a mistake ends in uvicorn's traceback
        AppSettings.from_conf(dict(args.conf), APP_DIR)
    except SettingsError as err:
        print(f"monailabel_app.serve: error: {err}", file=sys.stderr)
        return 2
    if args.studies is None:
        if not any(key == "image_folders" for key, _ in args.conf):  # the README asks about its DICOM series by path
            args.conf.append(("image_folders", str(args.sample_dir.resolve())))
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
    if args.host not in LOOPBACK and not auth_enabled():
        print(f"monailabel_app.serve: error: refusing to listen on {args.host} without authentication: set "
              "MONAI_LABEL_AUTH_ENABLE=true and MONAI_LABEL_AUTH_REALM_URI (MONAI Label's Keycloak login), or keep "
              "the default --host 127.0.0.1; see docs/SECURITY.md", file=sys.stderr)
        return 2
    print(f"[medisee] MONAI Label + MediSee on http://{args.host}:{args.port} serving {studies}\n"
          f"[medisee] in 3D Slicer: MediSee module > Server URL http://{args.host}:{args.port} > Connect; Ctrl+C stops",
          file=sys.stderr, flush=True)
    command = server_command(studies, args.host, args.port, args.conf)
    os.execve(sys.executable, command, server_environment())


def auth_enabled() -> bool:
    return os.environ.get("MONAI_LABEL_AUTH_ENABLE", "").strip().lower() in ("1", "true", "yes")


def server_environment() -> dict[str, str]:
    """This interpreter's folder first on PATH and the repository importable (for the gateway)."""
    root = str(APP_DIR.parent)
    python_path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return os.environ | {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                         "PYTHONPATH": python_path}


if __name__ == "__main__":
    raise SystemExit(main())

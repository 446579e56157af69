"""benchmarks/gpu_check.sh --dry-run: the GPU check's own steps with the tiny preset on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_prints_one_row_per_precision(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--json", str(tmp_path / "rows.json")],
                          capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("MediSee GPU check: preset tiny, random weights, CPU")
    assert [line.split("|")[0].strip() for line in lines[2:]] == ["bfloat16", "float32", "8bit", "4bit"]
    rows = {row["precision"]: row for row in json.loads((tmp_path / "rows.json").read_text())["rows"]}
    for precision in ("bfloat16", "float32"):
        assert all(rows[precision][key] > 0 for key in ("load s", "full s", "fast s", "slices/s")), rows[precision]
    for precision in ("8bit", "4bit"):
        assert rows[precision]["note"].startswith(f"skipped: --precision {precision} needs a CUDA GPU")


def test_gpu_check_without_a_gpu_says_so():
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 2 and "no CUDA GPU here" in done.stderr and "Traceback" not in done.stderr

"""A retraining's bonds to its server (``lib/trainers/process.py``): one at a time per
models folder, the lock gone with its holder, no retraining outliving its server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from monailabel_app.lib.trainers.process import TrainingBusy, exclusive_training, in_training_process

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from monailabel_app.lib.trainers.process import exclusive_training
    with exclusive_training(Path(sys.argv[1])):
        print("holding", flush=True)
        time.sleep(60)
""")


def test_one_retraining_at_a_time_and_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(TrainingBusy, match=f"process {holder.pid}"), exclusive_training(tmp_path):
            pass
    finally:
        holder.kill()  # as a kill -9 of the training process would
        holder.wait()
    with exclusive_training(tmp_path):
        assert "process" in (tmp_path / "training.lock").read_text()


WATCHED = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c",
        "import time; from monailabel_app.lib.trainers.process import end_with_parent; "
        "end_with_parent(0.1); print('watching', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    print(child.pid, flush=True)
    child.stdout.readline()
    print("ready", flush=True)
    import time; time.sleep(60)
""")


def test_a_retraining_ends_when_its_server_is_gone():
    server = subprocess.Popen([sys.executable, "-c", WATCHED], stdout=subprocess.PIPE, text=True)
    child = int(server.stdout.readline())
    assert server.stdout.readline().strip() == "ready"
    server.kill()
    server.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def test_the_server_itself_is_not_a_training_process():
    assert not in_training_process()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False

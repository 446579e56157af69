"""Stale extension-build locks are removed; a live build is waited for."""

from __future__ import annotations

import os
import threading
import time

from training.build_locks import clear_stale_build_locks


def test_a_lock_nobody_holds_is_removed_and_a_live_one_is_waited_for(tmp_path):
    stale = tmp_path / "deepspeed_shm_comm" / "lock"
    stale.parent.mkdir()
    stale.touch()
    old = time.time() - 3600
    os.utime(stale, (old, old))
    live = tmp_path / "other_op" / "lock"
    live.parent.mkdir()
    live.touch()
    threading.Timer(0.5, live.unlink).start()  # the build finishes
    started = time.monotonic()
    assert clear_stale_build_locks(tmp_path, stale_after_s=60, poll_s=0.1) == [stale]
    assert not stale.exists() and not live.exists() and time.monotonic() - started >= 0.4

"""A slow call (a question, an upload) in a background thread, so the panel stays usable and can cancel.

HTTP requests cannot be interrupted; cancelling abandons the answer (the server finishes it and
serves the next request as usual) and frees the panel at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import MediSeeError

T = TypeVar("T")
log = logging.getLogger("MediSee")


class BackgroundCall(Generic[T]):
    def __init__(self, function: Callable[[], T]) -> None:
        self._function = function
        self._result: T | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self.cancelled = False
        self._thread = threading.Thread(target=self._run, name="medisee-call", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._function()
        except BaseException as err:  # handed to the caller by result()
            self._error = err
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        self.cancelled = True

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> T:
        """The function's value, or its exception raised here (call once :meth:`done`)."""
        if not self._done.is_set():
            raise RuntimeError("the call has not finished")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class PanelCalls:
    """The panel's one background call at a time: :meth:`start` it, :meth:`poll` from a timer on the
    main thread, which hands the value to its ``on_done`` there, or a problem to ``on_error`` as one
    line (a :class:`MediSeeError`'s user message; any other exception is a bug, logged in full)."""

    def __init__(self, on_error: Callable[[str], None], on_busy: Callable[[bool], None]) -> None:
        self.on_error = on_error
        self.on_busy = on_busy
        self.call: BackgroundCall | None = None
        self.on_done: Callable[[Any], None] | None = None

    def running(self) -> bool:
        return self.call is not None and not self.call.done()

    def start(self, function: Callable[[], T], on_done: Callable[[T], None], busy: bool = True) -> bool:
        """False (and nothing started) while another call runs."""
        if self.running():
            return False
        self.call, self.on_done = BackgroundCall(function), on_done
        self.on_busy(busy)
        return True

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()
        self.call = None
        self.on_busy(False)

    def poll(self) -> None:
        if self.call is None or not self.call.done():
            return
        call, on_done, self.call = self.call, self.on_done, None
        self.on_busy(False)
        try:
            on_done(call.result())
        except MediSeeError as err:
            self.on_error(err.user_message)
        except Exception as err:  # a bug: logged with its traceback, shown as one line
            log.exception("MediSee")
            self.on_error(f"Unexpected error: {err}. Details are in the Python console.")

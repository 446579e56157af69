"""A slow call (a question, an upload) in a background thread, so the panel stays usable and can cancel.

HTTP requests cannot be interrupted; cancelling abandons the answer (the server finishes it and
serves the next request as usual) and frees the panel at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


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

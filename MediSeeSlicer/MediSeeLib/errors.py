"""Errors a user meets, each with a ``user_message`` the module shows as is (never a traceback)."""

from __future__ import annotations


class MediSeeError(Exception):
    """Base class: ``user_message`` is one or two plain sentences saying what happened and what to do."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ServerUnreachable(MediSeeError):
    def __init__(self, url: str, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(f"Cannot reach the MediSee server at {url}{detail}. Check the URL and that the server is running, "
                         "or start a local server.")
        self.url = url


class NoMediSeeModel(MediSeeError):
    def __init__(self, url: str, models: list[str]) -> None:
        found = ", ".join(models) if models else "none"
        super().__init__(f"The server at {url} has no 'medisee' model (models: {found}). Connect to a server started with "
                         "the MediSee app (./scripts/run.sh) or use a local server.")
        self.models = models


class EmptyQuery(MediSeeError):
    def __init__(self) -> None:
        super().__init__("The question is empty: type what you want to find, e.g. 'Where is the liver?'.")


class NoVolumeSelected(MediSeeError):
    def __init__(self) -> None:
        super().__init__("No input volume is selected: load an image and choose it as the input volume.")


class RequestTimedOut(MediSeeError):
    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"The server did not answer {what} within {seconds:.0f} s. Ask about fewer slices, or raise the "
                         "timeout; the server keeps serving.")
        self.seconds = seconds


class ServerRejected(MediSeeError):
    """A 4xx: the server said what was wrong with the request (its ``detail``)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"The server refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class ServerFailed(MediSeeError):
    """A 5xx or an answer this module cannot read."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"The server failed to answer: {detail}. See the server's log.")
        self.detail = detail


class OutsideVolume(MediSeeError):
    def __init__(self, what: str) -> None:
        super().__init__(f"The {what} is outside the input volume: move it onto the image.")


class LocalServerError(MediSeeError):
    def __init__(self, problem: str, log_tail: str = "") -> None:
        tail = f"\nLast log lines:\n{log_tail}" if log_tail else ""
        super().__init__(f"The local server could not be started: {problem}.{tail}")

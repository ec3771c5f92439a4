"""Signals during a write: delivered while the caller works, held back while skdistill cleans up."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Interruptions"]


class Interruptions:
    """Deliver SIGTERM and SIGINT only while the caller's block runs; hold them back otherwise.

    SIGTERM becomes ``SystemExit(143)`` and SIGINT ``KeyboardInterrupt``, so that clean-up
    code runs. A signal that arrives during skdistill's own steps (sweeping, publishing,
    removing the private folder, releasing the lock) is raised when they are done, so that
    it cannot cut them short. Only in the main thread, and only for a signal with its
    default action: a handler of the application's own stays in charge.
    """

    def __init__(self) -> None:
        self._held = True
        self._pending: list[BaseException] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interruptions:
        if threading.current_thread() is threading.main_thread():
            defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
            for signum, default in defaults.items():
                if signal.getsignal(signum) is default:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self._pending:
            raise self._pending[0] from error

    @contextlib.contextmanager
    def delivered(self) -> Iterator[None]:
        """Raise held-back signals now and any arriving ones at once, within the block."""
        self._held = False
        try:
            if self._pending:
                raise self._pending.pop(0)
            yield
        finally:
            self._held = True

    def _handle(self, signum: int, frame) -> None:
        interruption = KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
        if self._held:
            self._pending.append(interruption)
        else:
            raise interruption

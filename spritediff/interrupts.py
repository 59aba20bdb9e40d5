"""SIGINT and SIGTERM during a command: remembered, and raised as KeyboardInterrupt or Terminated.

cli.main installs the handlers; outputs.staged_output refuses to commit a stage after a signal.
"""
from __future__ import annotations

import signal
import threading


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that staging folders are cleaned up as on Ctrl-C."""


STOP = {"signal": None}  # the SIGINT or SIGTERM received during this main(), if any


def _on_signal(signum, frame):
    """Remember the signal (staged_output refuses to commit after one, even if a library swallowed the
    exception, as a C extension's import can) and raise KeyboardInterrupt or Terminated."""
    STOP["signal"] = signum
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def raise_if_stopped() -> None:
    """Raise again the interrupt of a signal received earlier in this run (see _on_signal)."""
    if STOP["signal"] is not None:
        raise KeyboardInterrupt() if STOP["signal"] == signal.SIGINT else Terminated()


def install_signal_handlers() -> dict:
    """SIGTERM, and SIGINT unless it is ignored or handled by someone else, to _on_signal; the old handlers."""
    STOP["signal"] = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_signal)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)
    return previous

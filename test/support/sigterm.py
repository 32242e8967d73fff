"""SIGTERM stops a test run as Ctrl-C does (installed by conftest's pytest_configure)."""

from __future__ import annotations

import signal
import sys


class SigtermAsCtrlC:
    """SIGTERM stops the run as Ctrl-C does, so pytest runs every teardown (hosts, netns, salt-masters).

    Python's default for SIGTERM is to die at once and leave all of them
    behind. A SIGTERM while tearing down (after a SIGTERM or a Ctrl-C) is
    ignored, as it would cut the teardown short (a second Ctrl-C still does).
    """

    def __init__(self) -> None:
        self.stopping = False
        self.previous: signal.Handlers | object = signal.SIG_DFL
        self.previous_int: signal.Handlers | object = signal.default_int_handler

    def install(self) -> None:
        self.previous = signal.signal(signal.SIGTERM, self)
        self.previous_int = signal.getsignal(signal.SIGINT)
        if self.previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, self.ctrl_c)

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)
        if signal.getsignal(signal.SIGINT) == self.ctrl_c:
            signal.signal(signal.SIGINT, self.previous_int)

    def ctrl_c(self, signum: int, frame) -> None:
        """Ctrl-C as always, noted: a SIGTERM after it (script/test passes one on) then finds it stopping."""
        self.stopping = True
        signal.default_int_handler(signum, frame)

    def __call__(self, signum: int, _frame) -> None:
        if self.stopping:
            print("\nSIGTERM: already stopping, tearing down", file=sys.stderr)
            return
        self.stopping = True
        raise KeyboardInterrupt("stopped by SIGTERM")

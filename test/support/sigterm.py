"""SIGTERM stops a test run as Ctrl-C does (installed by conftest's pytest_configure)."""

from __future__ import annotations

import signal
import sys


class SigtermAsCtrlC:
    """SIGTERM stops the run as Ctrl-C does, so pytest runs every teardown (hosts, netns, salt-masters).

    Python's default for SIGTERM is to die at once and leave all of them
    behind. A second SIGTERM while tearing down is ignored, as it would cut
    the teardown short (a second Ctrl-C still does).
    """

    def __init__(self) -> None:
        self.stopping = False
        self.previous: signal.Handlers | object = signal.SIG_DFL

    def install(self) -> None:
        self.previous = signal.signal(signal.SIGTERM, self)

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)

    def __call__(self, signum: int, _frame) -> None:
        if self.stopping:
            print("\nSIGTERM: already stopping, tearing down", file=sys.stderr)
            return
        self.stopping = True
        raise KeyboardInterrupt("stopped by SIGTERM")

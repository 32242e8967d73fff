"""Every command line on the machine, sampled while a test runs: a secret on one is seen even if its process
ended long before the test looks (hosts' processes are this machine's, in namespaces)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class ArgvWatch:
    """Every command line of every process on the machine, sampled until stopped."""

    def __init__(self, interval: float = 0.02) -> None:
        self.seen: set[str] = set()
        self._interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        self.seen.add(
                            Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        )
                    except OSError:
                        pass  # gone meanwhile
            self._stop.wait(self._interval)

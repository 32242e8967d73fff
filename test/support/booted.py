"""Test hosts that boot systemd as PID 1 (systemd-nspawn), as most VMs and servers operators run do.

A ``BootedHost`` boots a clean Debian root (script/make-hostroot's systemd
kind) with systemd-nspawn, under an overlay whose upper layer lies on the
machine's disk and outlives a boot: ``reboot()`` is ``systemctl reboot``
inside (nspawn ends with 133 and the host is booted again on the same
layers), ``power_cut()`` kills the container's PID 1 from outside, which ends
everything in it at once, and boots it again. Its address on the test bridge
comes from systemd-networkd inside, so it comes back with every boot.

It answers as a ``TestHost`` does (``run``, ``sh``, ``path``, ``wait_for``:
nsenter into the container's namespaces), so a SaltCluster's minion or a
test runs in it alike. What systemd-nspawn needs on these machines (systemd
is not their PID 1, no system bus): ``--register=no --keep-unit``, a tmpfs on
/run/systemd/nspawn, in a mount namespace of the host's own.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from support.hosts import BRIDGE, BRIDGE_PREFIX, NAME_PREFIX, TestHost, TestHostError, deferred_signals, ensure_bridge
from support.timing import step

STATE_DIR = Path("/var/tmp/sentry-booted")  # on disk: a boot's writes are there for the next boot
BOOT_TIMEOUT = 180
REBOOT_EXIT = 133
SYSTEMD = "/usr/lib/systemd/systemd"  # systemd-nspawn's exit status when the container asked for a reboot

BOOT_SCRIPT = """
set -e
mount --make-rprivate /
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755 sentry-nspawn /run/systemd/nspawn
mount -t overlay overlay -o lowerdir={root},upperdir={state}/upper,workdir={state}/work {state}/merged
set +e
while true; do
    systemd-nspawn --quiet --directory={state}/merged --boot --register=no --keep-unit --machine={machine} \\
        --network-bridge={bridge} --console=read-only --link-journal=no {binds}
    status=$?
    [ "$status" = {reboot} ] || exit "$status"
done
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").split("\0")
    except FileNotFoundError:
        return []


class BootedHost(TestHost):
    """A test host booted by systemd-nspawn: systemd its PID 1, ``address`` on the test bridge."""

    def __init__(
        self, name: str, *, root: str | os.PathLike, address: str, shared: tuple[str, ...] = (), **kwargs
    ) -> None:
        super().__init__(name, root=root, address=address, shared=shared, **kwargs)
        self.machine = f"{NAME_PREFIX}{name}"
        self.state = STATE_DIR / self.machine
        self.boots = 0

    # --- lifecycle -------------------------------------------------------

    def start(self) -> BootedHost:
        """A fresh upper layer, the network's settings in it, then the first boot."""
        try:
            with step("host start"):
                shutil.rmtree(self.state, ignore_errors=True)
                for folder in ("upper", "work", "merged"):
                    (self.state / folder).mkdir(parents=True)
                self._configure()
                self._boot()
        except BaseException:
            self.destroy()
            raise
        return self

    def _configure(self) -> None:
        """Written into the upper layer before the first boot: name, address (networkd), nothing else."""
        upper = self.state / "upper"
        (upper / "etc" / "systemd" / "network").mkdir(parents=True)
        (upper / "etc" / "systemd" / "network" / "10-host0.network").write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={self.address}/{BRIDGE_PREFIX}\nLinkLocalAddressing=no\n"
        )
        wants = upper / "etc" / "systemd" / "system" / "multi-user.target.wants"
        wants.mkdir(parents=True)
        (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
        (upper / "etc" / "hostname").write_text(f"{self.name}\n")

    def _boot(self) -> None:
        ensure_bridge()
        binds = " ".join(f"--bind-ro={shlex.quote(path)}" for path in self.shared)
        script = BOOT_SCRIPT.format(
            root=shlex.quote(str(self.root)),
            state=shlex.quote(str(self.state)),
            machine=shlex.quote(self.machine),
            bridge=BRIDGE,
            binds=binds,
            reboot=REBOOT_EXIT,
        )
        self._launcher = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--mount", "--fork", "bash", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_until_booted(previous=None)

    def _nspawn_pid(self) -> int | None:
        pending = [self._launcher.pid]
        while pending:
            pid = pending.pop()
            argv = _argv(pid)
            if argv[:1] == ["systemd-nspawn"] and f"--machine={self.machine}" in argv:
                return pid
            pending.extend(_children(pid))
        return None

    def _wait_until_booted(self, previous: int | None) -> None:
        """Until a PID 1 other than ``previous`` runs in the container and systemd says it has booted."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self._launcher.poll() is not None:
                output = self._launcher.stdout.read().decode(errors="replace")
                ended = self._launcher.returncode
                raise TestHostError(f"booted host {self.name}: systemd-nspawn ended ({ended})\n{output[-5000:]}")
            nspawn = self._nspawn_pid()
            inits = _children(nspawn) if nspawn else []
            booting = inits and inits[0] != previous and _argv(inits[0])[:1] in (["/sbin/init"], [SYSTEMD])
            if booting:
                self.init_pid = inits[0]
                state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=BOOT_TIMEOUT)
                if state.stdout.strip() in ("running", "degraded"):
                    self.boots += 1
                    return
            time.sleep(0.2)
        raise TestHostError(f"booted host {self.name} did not finish booting within {BOOT_TIMEOUT}s")

    def reboot(self) -> None:
        """``systemctl reboot`` inside; returns once the next boot is done."""
        previous = self.init_pid
        self.run(["systemctl", "reboot"], check=False)
        with step("host start"):
            self._wait_until_booted(previous)

    def power_cut(self) -> None:
        """Every process of the host ends at once (SIGKILL to its PID 1); then it boots again on what was written.

        What processes wrote and did not flush is still in this machine's page cache: a crash, not the loss of
        unflushed writes a real power cut brings.
        """
        with deferred_signals():
            os.kill(self.init_pid, signal.SIGKILL)
            self._launcher.wait(timeout=60)
            self._launcher.stdout.close()
        with step("host start"):
            self._boot()

    def destroy(self) -> None:
        """Everything in the host ends (as a TestHost's does), then its layers go; safe to call again."""
        super().destroy()
        shutil.rmtree(self.state, ignore_errors=True)

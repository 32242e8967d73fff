"""Throw-away test hosts: a network namespace plus a mount namespace over an overlay.

Each host sees a clean Debian root filesystem (``root``, made by
``script/make-hostroot``) read-only underneath a tmpfs layer: ``dpkg -i``,
users and files under ``/etc`` stay inside and vanish when the host is
destroyed, so the suite leaves the machine as it found it and passes twice in
a row. Nothing this machine installed or deployed shows through, and
installing packages on the machine does not change a running host's files.
No Docker engine is needed.

    with TestHost("pkg", root="build/hostroot/systemd-0123abcd") as host:
        host.run(["dpkg", "-i", "/tmp/sentry.deb"])

Commands run inside through ``nsenter``; files are reached from outside through
``/proc/<init>/root``.  The overlay's upper layer (what the host changed) is
``host.changes``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from support.timing import step

SCRATCH = "/mnt"  # shadowed by a tmpfs inside the host's own mount namespace
INIT_MARKER = "sentry-testhost-init"

# Prepended to the names a host takes in the machine's own namespace (its
# netns, its end of the veth), so that test runs sharing the machine, or one
# run nested in another, do not take each other's hosts.
NAME_PREFIX = os.environ.get("SENTRY_TEST_PREFIX", "")
if not re.fullmatch(r"[a-z0-9-]*", NAME_PREFIX):
    raise ValueError(f"SENTRY_TEST_PREFIX={NAME_PREFIX!r}: use lower-case letters, digits and '-' only")

# PID 1 of the host: reaps orphans (daemons double-fork) and otherwise sleeps.
INIT_PROGRAM = (
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.5)\n"
)

SETUP_SCRIPT = """
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 sentry-testhost {scratch}
mkdir {scratch}/upper {scratch}/work {scratch}/root
mount -t overlay overlay -o lowerdir={root},upperdir={scratch}/upper,workdir={scratch}/work {scratch}/root
mount -t proc proc {scratch}/root/proc
mount --rbind /dev {scratch}/root/dev
mount -t sysfs sysfs {scratch}/root/sys
mount -t tmpfs -o mode=0755 tmpfs {scratch}/root/run
mount -t tmpfs -o mode=1777 tmpfs {scratch}/root/tmp
for shared in {shared}; do
    # Seen at the same path, writable, changes kept inside the host.
    layer={scratch}/shared-$(echo "$shared" | md5sum | cut -c1-8)
    mkdir -p $layer/upper $layer/work {scratch}/root$shared
    mount -t overlay overlay -o lowerdir=$shared,upperdir=$layer/upper,workdir=$layer/work {scratch}/root$shared
done
hostname {name}
exec chroot {scratch}/root /usr/bin/python3 -c {init} {marker} {name}
"""


# Test hosts with an address share this bridge in the machine's own namespace,
# which has BRIDGE_ADDRESS (a salt-master there listens on it). The range is
# used only by the test's own namespaces.
BRIDGE = "sentrytest0"
BRIDGE_ADDRESS = "10.231.7.1"
BRIDGE_PREFIX = 24
# Its IPv6 side: a unique-local /64 of the test's own (nodad: usable at once).
BRIDGE_ADDRESS6 = "fd5e:7e57:0:7::1"
BRIDGE_PREFIX6 = 64


# Host numbers (1-60 for the suite, 100-104 for the mirror's upstream) start
# after this; a second run on the machine at the same time takes another range,
# e.g. SENTRY_TEST_HOST_OFFSET=130 (the numbers must stay below 255).
HOST_OFFSET = int(os.environ.get("SENTRY_TEST_HOST_OFFSET", "10"))
# script/test's shards each take this many numbers from their offset on: a number past it would be the
# other shard's. Unset outside script/test (benchmarks use 110 and above, alone on the machine).
HOST_SPAN = int(os.environ.get("SENTRY_TEST_HOST_SPAN", "0"))


def _host_byte(number: int) -> int:
    if HOST_SPAN and not 0 < number < HOST_SPAN:
        raise ValueError(f"host number {number}: a shard of script/test owns host numbers 1-{HOST_SPAN - 1} only")
    if not 0 < HOST_OFFSET + number < 255:
        raise ValueError(f"host number {number} + SENTRY_TEST_HOST_OFFSET={HOST_OFFSET} leaves 10.231.7.0/24")
    return HOST_OFFSET + number


def host_address(number: int) -> str:
    return f"10.231.7.{_host_byte(number)}"


def host_address6(number: int) -> str:
    return f"fd5e:7e57:0:7::{_host_byte(number):x}"


def ensure_bridge() -> None:
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode == 0:
        return
    made = subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        if "exists" in made.stderr:  # another run made it meanwhile (and sets it up)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and BRIDGE_ADDRESS not in _bridge_addresses():
                time.sleep(0.1)
            return
        raise TestHostError(f"cannot make the test bridge {BRIDGE}: {made.stderr.strip()}")
    subprocess.run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{BRIDGE_PREFIX}", "dev", BRIDGE], check=True)
    subprocess.run(
        ["ip", "-6", "addr", "add", f"{BRIDGE_ADDRESS6}/{BRIDGE_PREFIX6}", "dev", BRIDGE, "nodad"], check=True
    )
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)


# Every test run on the machine holds it shared while it runs (script/test's two shards, other runs):
# the last to end, the one that can take it alone, may remove the bridge.
RUNS_LOCK = Path("/run/lock/sentry-test-runs.lock")
_runs_lock: list = []


def _bridge_addresses() -> str:
    return subprocess.run(["ip", "addr", "show", BRIDGE], capture_output=True, text=True, check=False).stdout


def hold_runs_lock() -> None:
    """This run is on (until the process ends or remove_bridge)."""
    RUNS_LOCK.parent.mkdir(parents=True, exist_ok=True)  # a host's clean root may lack /run/lock
    handle = RUNS_LOCK.open("a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    _runs_lock.append(handle)


def _last_run() -> bool:
    """No other run holds the lock: this one's hold ends, and the lock can be taken alone."""
    for handle in _runs_lock:
        handle.close()
    _runs_lock.clear()
    with RUNS_LOCK.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


def remove_bridge() -> None:
    """Remove the bridge unless another test run on this machine still uses it.

    It does while the run is on (``hold_runs_lock``; a run starts its
    salt-masters and hosts in any order, sharing the bridge), while a host is
    attached, or while a salt-master listens on the bridge's address.
    """
    if not _last_run():
        return
    attached = subprocess.run(
        ["ip", "-o", "link", "show", "master", BRIDGE], capture_output=True, text=True, check=False
    )
    if attached.returncode == 0 and attached.stdout.strip():
        return
    listening = subprocess.run(["ss", "-Hltn", "src", BRIDGE_ADDRESS], capture_output=True, text=True, check=False)
    if listening.returncode == 0 and listening.stdout.strip():
        return
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


class TestHostError(RuntimeError):
    pass


# What stops a test run: Ctrl-C, and (see support/sigterm.py) SIGTERM.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then act as they would have.

    A teardown cut in half (a host's init killed, its netns not yet deleted)
    leaves things behind that nothing removes later. Python runs signal
    handlers in the main thread only, so elsewhere this defers nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _frame: caught.append(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


class TestHost:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        name: str,
        start_timeout: float = 10.0,
        address: str | None = None,
        shared: tuple[str, ...] = (),
        address6: str | None = None,
        *,
        root: str | os.PathLike,
    ) -> None:
        """``root``: the root filesystem the host starts from, the overlay's read-only lower layer.

        ``address``: this host's IPv4 address on the test bridge (see ``BRIDGE``); none keeps it on loopback.

        ``address6``: its IPv6 address on the bridge; alone (no ``address``) it makes an IPv6-only host.

        ``shared``: directories of this machine the host sees at the same path even
        where its own mounts (a tmpfs /tmp) would hide them; its writes stay inside.
        """
        self.name = name
        self.root = Path(root).resolve()
        if not (self.root / "usr" / "bin" / "python3").is_file():
            raise TestHostError(
                f"{self.root} is no root for a test host (no /usr/bin/python3): see script/make-hostroot"
            )
        self.shared = tuple(str(Path(path).resolve()) for path in shared)
        self.netns = f"sentry-test-{NAME_PREFIX}{name}"
        self.start_timeout = start_timeout
        self.address = address
        self.address6 = address6
        self._launcher: subprocess.Popen | None = None
        self.init_pid: int | None = None

    # --- lifecycle -------------------------------------------------------

    def start(self) -> TestHost:
        """Make the netns and the host; whatever stops it half-way (Ctrl-C too) removes what was made."""
        try:
            with step("host start"):
                return self._start()
        except BaseException:
            self.destroy()
            raise

    def _start(self) -> TestHost:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True)
        if self.address or self.address6:
            self._attach_to_bridge()
        script = SETUP_SCRIPT.format(
            scratch=SCRATCH,
            root=shlex.quote(str(self.root)),
            name=shlex.quote(self.name),
            init=shlex.quote(INIT_PROGRAM),
            marker=INIT_MARKER,
            shared=" ".join(shlex.quote(path) for path in self.shared),
        )
        self._launcher = subprocess.Popen(
            [
                # Even a killed test run takes its hosts along: unshare gets SIGKILL when
                # the run dies, and --kill-child takes the host's init and all in it.
                "setpriv",
                "--pdeathsig",
                "KILL",
                "--",
                "ip",
                "netns",
                "exec",
                self.netns,
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--uts",
                "--kill-child",
                "bash",
                "-c",
                script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.init_pid = self._wait_for_init()
        if os.readlink(f"/proc/{self.init_pid}/root") == "/":
            raise TestHostError(f"test host {self.name}: init is not inside its own root; refusing to run there")
        return self

    def _attach_to_bridge(self) -> None:
        ensure_bridge()
        outside = self.veth
        ip = ["ip", "netns", "exec", self.netns, "ip"]
        subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
        subprocess.run(
            ["ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", self.netns], check=True
        )
        subprocess.run(["ip", "link", "set", outside, "master", BRIDGE, "up"], check=True)
        if self.address:
            subprocess.run([*ip, "addr", "add", f"{self.address}/{BRIDGE_PREFIX}", "dev", "eth0"], check=True)
        if self.address6:
            subprocess.run(
                [*ip, "-6", "addr", "add", f"{self.address6}/{BRIDGE_PREFIX6}", "dev", "eth0", "nodad"], check=True
            )
        subprocess.run([*ip, "link", "set", "eth0", "up"], check=True)
        if self.address:
            subprocess.run([*ip, "route", "add", "default", "via", BRIDGE_ADDRESS], check=True)

    @property
    def veth(self) -> str:
        """The host's end of its veth pair in the machine's namespace: a name of at most 15 characters."""
        readable = f"vs-{NAME_PREFIX}{self.name}"
        if len(readable) <= 15:
            return readable
        return "vs-" + hashlib.sha256(self.netns.encode()).hexdigest()[:12]

    def _wait_for_init(self) -> int:
        deadline = time.monotonic() + self.start_timeout
        children = Path(f"/proc/{self._launcher.pid}/task/{self._launcher.pid}/children")
        while time.monotonic() < deadline:
            if self._launcher.poll() is not None:
                output = self._launcher.stdout.read().decode(errors="replace")
                raise TestHostError(f"test host {self.name} failed to start: {output}")
            try:
                pids = children.read_text().split()
                # Same pid as the setup shell, whose script mentions the marker too, and
                # as chroot, which has it as an argument before it has changed root:
                # only the exec'd init (chroot done) is python with the marker.
                argv = Path(f"/proc/{pids[0]}/cmdline").read_text(errors="replace").split("\0") if pids else []
                if argv[:1] == ["/usr/bin/python3"] and INIT_MARKER in argv:
                    return int(pids[0])
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise TestHostError(f"test host {self.name} did not start within {self.start_timeout}s")

    def destroy(self) -> None:
        """Kill everything in the host and delete its netns (the veth goes with it); safe to call again."""
        with deferred_signals():
            if self.init_pid:
                try:
                    os.kill(self.init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self._launcher:
                if self.init_pid is None:  # stopped before init ran: the setup shell's session goes instead
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._launcher.pid, signal.SIGKILL)
                try:
                    self._launcher.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self._launcher.pid, signal.SIGKILL)
                    self._launcher.wait(timeout=10)
                self._launcher.stdout.close()
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
            self.init_pid = None
            self._launcher = None

    def __enter__(self) -> TestHost:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.destroy()

    # --- inside the host -------------------------------------------------

    def command(self, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` inside this host."""
        return [
            "nsenter",
            "--target",
            str(self.init_pid),
            "--mount",
            "--net",
            "--pid",
            "--uts",
            "--root",
            "--wd",
            "--",
            *argv,
        ]

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command inside; output is captured as text. ``check`` raises with its output."""
        full_env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/root",
            **(env or {}),
        }
        with _step_of(argv):
            completed = subprocess.run(
                self.command(argv),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
                check=False,
            )
        if check and completed.returncode != 0:
            raise TestHostError(
                f"{shlex.join(argv)} exited {completed.returncode} on {self.name}\n"
                f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
            )
        return completed

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(["bash", "-c", script], **kwargs)

    def path(self, inside: str | os.PathLike) -> Path:
        """Where a path inside the host is seen from outside."""
        return Path(f"/proc/{self.init_pid}/root") / str(inside).lstrip("/")

    @property
    def changes(self) -> Path:
        """The overlay's upper layer: every file the host created or changed."""
        return Path(f"/proc/{self._launcher.pid}/root") / SCRATCH.lstrip("/") / "upper"

    def wait_for(self, probe: str, timeout: float = 60, interval: float = 0.25) -> None:
        """Wait until the shell snippet ``probe`` succeeds inside the host."""
        with step("server start") if "/+api" in probe else contextlib.nullcontext():
            self._wait_for(probe, timeout, interval)

    def _wait_for(self, probe: str, timeout: float, interval: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.sh(probe, check=False, timeout=timeout).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TestHostError(f"{probe!r} did not succeed on {self.name} within {timeout}s")
            time.sleep(interval)


STATE_RUNS = {"state.apply", "state.sls", "state.highstate"}


def _step_of(argv: list[str]) -> contextlib.AbstractContextManager:
    """The kind of step (support/timing.py) a command inside a host is, if any: dpkg and apt, salt-call's state runs."""
    program = Path(argv[0]).name if argv else ""
    if program in {"dpkg", "apt-get", "apt"}:
        return step("dpkg / apt")
    if program == "salt-call" and STATE_RUNS & set(argv):
        return step("deploy (state.apply)")
    return contextlib.nullcontext()

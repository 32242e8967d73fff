"""A test run stopped by SIGTERM or Ctrl-C leaves nothing behind on the machine.

A small test session runs in a subprocess on this repository's conftest: a
salt-master (SaltCluster) and a minion in a test host on the bridge, then it
sleeps. It runs as one pytest, and as script/test runs the suite (two shards
side by side, two such test modules, one in each). Mid-test it gets SIGTERM
(as from a CI runner or ``kill``) or SIGINT to its whole process group (as
from Ctrl-C in a terminal). Afterwards no process it started runs, and none
of its network namespaces, veths or mounts is left. Its hosts' names carry a
prefix of their own (SENTRY_TEST_PREFIX): this run's hosts, and other runs'
on the machine, are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from support.hosts import HOST_OFFSET, NAME_PREFIX
from support.paths import REPO

pytestmark = pytest.mark.slow

# Last byte of the inner run's hosts' bridge addresses, one per inner test module: above every other
# run's (script/test's two shards use up to offset 130 + number 104). Each module turns it into a host
# number against the offset its own run was given.
INNER_ADDRESSES = (246, 247)
MID_TEST_TIMEOUT = 480  # two shards, each a salt-master and a host, beside a whole suite on 2 cores
EXIT_TIMEOUT = 240
LEFTOVER_GRACE = 30

INNER_TEST = """
import json
import os
import time
from pathlib import Path

import psutil
from support.cluster import SaltCluster
from support.hosts import HOST_OFFSET
from support.salt_factories import salt_factories_config  # a module's fixture outranks salt-factories' own default


def identities(processes):
    # pid, start time and command line of each process still there
    found = []
    for process in processes:
        try:
            found.append([process.pid, process.create_time(), " ".join(process.cmdline())])
        except psutil.Error:
            pass  # a salt-master helper that came and went
    return found


def test_stop(salt_factories, tmp_path):
    cluster = SaltCluster(salt_factories, tmp_path / "c", master_id="stop", first_host_number={address} - HOST_OFFSET)
    with cluster:
        host = cluster.add_minion("stop-minion", {{}})
        master = psutil.Process(cluster.master.pid)
        init = psutil.Process(host.init_pid)
        started = [
            psutil.Process(),
            master,
            *master.children(recursive=True),
            init.parent(),  # unshare, which holds the host's namespaces
            init,
            *init.children(recursive=True),  # the salt-minion
        ]
        marker = Path({marker!r})
        marker.with_suffix(".tmp").write_text(
            json.dumps(
                {{
                    "processes": identities(started),
                    "netns": host.netns,
                    "veth": host.veth,
                }}
            )
        )
        marker.with_suffix(".tmp").rename(marker)
        # Short sleeps, as a test waiting on a server polls: a signal the kernel hands to another thread of
        # this process (salt-factories' log thread) does not cut a sleep short; Python acts on it at the next.
        for _ in range(1200):
            time.sleep(0.5)
"""


def start_inner_run(workdir: Path, prefix: str, markers: list[Path], log: Path, launcher: str) -> subprocess.Popen:
    """The inner session, in a session of its own (its own process group, as a terminal's job is): one
    pytest, or script/test's two shards; one test module per marker."""
    test_files = []
    for number, marker in enumerate(markers):
        test_files.append(workdir / f"test_stopped_{number}.py")
        test_files[-1].write_text(INNER_TEST.format(address=INNER_ADDRESSES[number], marker=str(marker)))
    env = {**os.environ, "SENTRY_TEST_PREFIX": prefix, "PYTHONPATH": str(REPO / "test")}
    env["SENTRY_TEST_HOST_OFFSET"] = str(HOST_OFFSET)
    env["SENTRY_TEST_HOST_SPAN"] = "0"  # its addresses are INNER_ADDRESSES, whatever its shard's numbers
    options = ["-p", "conftest", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(workdir), "-q"]
    if launcher == "pytest":
        # Short: the salt-master's unix sockets lie below it, and their paths may have 107 characters at most.
        command = [sys.executable, "-m", "pytest", *options, "--basetemp", str(workdir / "t")]
    else:  # each shard its own pytest's temporary folder
        command = [str(REPO / "script" / "test"), *options]
        env["SENTRY_TEST_SHARDS"] = "2"  # whatever the outer run was told
    with log.open("wb") as output:
        return subprocess.Popen(
            # Ctrl-C acts as in a terminal's job. This test may itself run with SIGINT ignored (a shard of
            # script/test's, a background job of a shell), and an ignored SIGINT is inherited: bash then
            # cannot trap it, and Python does not make it KeyboardInterrupt.
            ["env", "--default-signal=INT,QUIT", *command, *map(str, test_files)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_markers(run: subprocess.Popen, markers: list[Path], log: Path) -> dict:
    """What the inner tests started, once all of them are mid-test."""
    deadline = time.monotonic() + MID_TEST_TIMEOUT
    while not all(marker.exists() for marker in markers):
        if run.poll() is not None:
            pytest.fail(f"the inner run ended before its test got going:\n{log.read_text()[-5000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the inner run was not mid-test within {MID_TEST_TIMEOUT}s:\n{log.read_text()[-5000:]}")
        time.sleep(0.5)
    found = [json.loads(marker.read_text()) for marker in markers]
    return {
        "processes": [process for one in found for process in one["processes"]],
        "netns": [one["netns"] for one in found],
        "veth": [one["veth"] for one in found],
    }


def leftovers(workdir: Path, prefix: str, started: dict) -> list[str]:
    """What of the inner run is still on the machine: processes, network namespaces, veths, mounts."""
    found = []
    recorded = {(pid, round(created, 2)): cmdline for pid, created, cmdline in started["processes"]}
    for process in psutil.process_iter(["pid", "create_time", "cmdline", "cwd", "environ", "status"]):
        info = process.info
        if info["pid"] == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue  # a zombie is gone but for its exit status
        cmdline = " ".join(info["cmdline"] or ())
        reasons = []
        if (info["pid"], round(info["create_time"], 2)) in recorded:
            reasons.append("started by the inner run")
        if str(workdir) in cmdline or str(workdir) in (info["cwd"] or ""):
            reasons.append("works in its directory")
        if (info["environ"] or {}).get("SENTRY_TEST_PREFIX", "").startswith(prefix):
            reasons.append("has its environment")
        if reasons:
            found.append(f"process {info['pid']} ({', '.join(reasons)}): {cmdline}")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if line.startswith(f"sentry-test-{prefix}")]
    for veth in started["veth"]:
        if subprocess.run(["ip", "link", "show", veth], capture_output=True, check=False).returncode == 0:
            found.append(f"veth {veth}")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [
        f"mount {line}" for line in mounts if any(netns in line for netns in started["netns"]) or str(workdir) in line
    ]
    return found


@pytest.mark.parametrize(
    ("launcher", "stop"),
    [("pytest", "sigterm"), ("pytest", "ctrl-c"), ("script/test", "sigterm"), ("script/test", "ctrl-c")],
)
def test_a_stopped_run_leaves_no_process_namespace_or_mount(launcher, stop):
    prefix = f"{NAME_PREFIX}stop{os.getpid()}-"
    workdir = Path(tempfile.mkdtemp(prefix="sentry-stop-"))
    modules = 1 if launcher == "pytest" else 2
    markers, log = [workdir / f"mid-test-{number}.json" for number in range(modules)], workdir / "inner.log"
    run = start_inner_run(workdir, prefix, markers, log, launcher)
    try:
        started = wait_for_markers(run, markers, log)
        shards = [""] if launcher == "pytest" else ["s1-", "s2-"]  # script/test's shard prefixes
        assert sorted(started["netns"]) == [f"sentry-test-{prefix}{shard}stop-minion" for shard in shards]
        # Before: the check below sees the inner run's things while they are there.
        assert any("started by the inner run" in line for line in leftovers(workdir, prefix, started))
        assert any(line.startswith("netns ") for line in leftovers(workdir, prefix, started))

        if stop == "sigterm":
            os.kill(run.pid, signal.SIGTERM)
        else:
            os.killpg(run.pid, signal.SIGINT)
        try:
            returncode = run.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the inner run did not stop within {EXIT_TIMEOUT}s of {stop}:\n{log.read_text()[-5000:]}")
        output = log.read_text()
        # pytest's own code for an interrupted session: it tore down as after Ctrl-C.
        assert returncode == pytest.ExitCode.INTERRUPTED, f"exit {returncode}\n{output[-5000:]}"

        # The kernel removes namespaces and reaps killed processes shortly after.
        deadline = time.monotonic() + LEFTOVER_GRACE
        while (left := leftovers(workdir, prefix, started)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, "\n".join([*left, output[-3000:]])
    finally:
        stop_for_good(run)
        shutil.rmtree(workdir, ignore_errors=True)


def stop_for_good(run: subprocess.Popen) -> None:
    """An inner run this test did not see through: SIGTERM lets it tear down, SIGKILL if it does not."""
    if run.poll() is not None:
        return
    os.kill(run.pid, signal.SIGTERM)
    try:
        run.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()

"""A real salt-master and salt-minions in test hosts: the formula as a master deploys it.

The master (pytest-salt-factories) runs in the machine's own namespace and
listens on the test bridge; each minion is a ``salt-minion -d`` inside a test
host of its own (own filesystem view, own address on the bridge), with no way
out but the bridge. Each minion gets its own pillar, which a test can change;
a pillar tree of the operator's kind (``pillar_tree``: its own top.sls and
sls files, e.g. example/pillar) can serve as the base, the minions' own
pillars then merged over it.

    with SaltCluster(salt_factories, tmp_path, state_top={"cl-a": ["sentry"]}) as cluster:
        hosts = cluster.add_minions({"cl-a": {"sentry": {...}}})
        states = cluster.apply("*")            # {minion: {state key: result}}
        cluster.salt("cl-a", "test.ping").data
        cluster.orchestrate("sentry.upgrade", pillar={...}).returncode  # salt-run

Teardown leaves nothing behind, even when Ctrl-C or SIGTERM cut the test
short: the hosts are destroyed (their minions die with them), the minions'
keys are deleted from the master, the master stops.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.host_roots import new_host, python_home
from support.hosts import BRIDGE_ADDRESS, TestHost, deferred_signals, ensure_bridge, host_address
from support.paths import REPO, formula_tree
from support.timing import step

MINION_CONF = "/etc/salt-minion-test"
MINION_ROOT = "/srv/salt-minion-test"
APPLY_TIMEOUT = 900
PING_TIMEOUT = 5
MINION_START_TIMEOUT = 90


def no_route_out(host: TestHost) -> None:
    """Only the bridge's subnet is reachable; anything else fails at once, as on a host without an address.

    Through the default route via the bridge, packets for elsewhere are dropped
    silently: apt-get update (pkg.installed refreshes the package database once
    per minion start) and DNS would each wait out their timeouts.
    """
    host.run(["ip", "route", "replace", "unreachable", "default"])


def failed(states: dict) -> dict[str, str]:
    """State key -> comment of every state that failed."""
    return {key: result["comment"] for key, result in states.items() if result["result"] is False}


def changed(states: dict) -> dict[str, dict]:
    """State id -> changes of every state that changed something, in one minion's run that succeeded.

    A failed run (no state results, or a failing state) fails the test here: its ``{}`` would pass for
    "nothing changed".
    """
    if not isinstance(states, dict) or not states or failed(states):
        why = failed(states) if isinstance(states, dict) and states else states
        raise AssertionError(f"state.apply failed; its changes prove nothing: {why}")
    return {key.split("_|-")[1]: result["changes"] for key, result in states.items() if result["changes"]}


@dataclass
class SaltResult:
    """What a salt or salt-run command said: ``data`` is its JSON output as printed, or None."""

    returncode: int
    data: Any
    stdout: str
    stderr: str

    @classmethod
    def parse(cls, returncode: int, stdout: str, stderr: str) -> SaltResult:
        # Parsed here: salt-factories unwraps a one-minion target's return, so
        # its own parse looks different for one minion and for several.
        try:
            data = json.loads(stdout)
        except ValueError:
            data = None
        return cls(returncode, data, stdout, stderr)


def minion_venv(version: str) -> Path:
    """The venv of an older Salt release for test minions (``3006``, ``3007``, ``3006-py310``:
    test/salt-minions/<version>.lock, installed by script/bootstrap test into .venv-salt<version>)."""
    venv = REPO / f".venv-salt{version}"
    if not (venv / "bin" / "salt-minion").exists():
        pytest.fail(f"no Salt {version} for test minions in {venv}: run script/bootstrap test")
    return venv


def pillar_sls(minion_id: str) -> str:
    """The pillar sls holding one minion's pillar (a dot would make it a path)."""
    return "minion_" + minion_id.replace(".", "_").replace("-", "_")


class SaltCluster:
    """A salt-master on the test bridge and salt-minions in test hosts, each with its own pillar."""

    def __init__(
        self,
        salt_factories,
        workdir: Path,
        *,
        master_id: str = "sentry-cluster",
        first_host_number: int = 21,
        state_top: dict[str, list[str]] | None = None,
        pillar_tree: Path | None = None,
        master_overrides: dict[str, Any] | None = None,
    ) -> None:
        """``workdir``: a fresh directory (``tmp_path``) for the master's files and the pillar tree.

        ``first_host_number``: minions get ``host_address(n)`` from here on; tests
        that may share the bridge use ranges of their own.
        ``state_top``: minion id -> sls list, served as ``salt://top.sls`` beside
        the formula, so ``apply(tgt)`` with no sls is a highstate.
        ``pillar_tree``: a pillar root (top.sls and its sls files) copied into the master's;
        each minion's own pillar comes after its top's entries, so it overrides them.
        ``master_overrides``: more of the master's configuration (e.g. ``nodegroups``).
        """
        self.workdir = workdir
        self.pillar_root = workdir / "pillar"
        self.state_root = workdir / "states"
        self.state_root.mkdir(parents=True)
        if pillar_tree is not None:
            shutil.copytree(pillar_tree, self.pillar_root)
            self.tree_top = yaml.safe_load((self.pillar_root / "top.sls").read_text())["base"]
        else:
            self.pillar_root.mkdir(parents=True)
            self.tree_top = {}
        if state_top is not None:
            (self.state_root / "top.sls").write_text(yaml.safe_dump({"base": state_top}))
        self.pillars: dict[str, dict] = {}
        self.write_pillars()
        self.next_number = first_host_number
        self.hosts: dict[str, TestHost] = {}
        self.minion_venvs: dict[str, Path] = {}  # minion id -> the venv of its (older) Salt
        # minion id -> what its saltutil.sync_all brought (modules, states, ...)
        self.synced: dict[str, dict] = {}
        self.master = salt_factories.salt_master_daemon(
            master_id,
            defaults={"root_dir": workdir / "master"},
            overrides={
                "interface": BRIDGE_ADDRESS,
                "auto_accept": True,
                "file_roots": {"base": [str(formula_tree()), str(self.state_root)]},
                # Salt's own default (salt-factories sets 0): every directory synced or recursed asks
                # for the file list again.
                "fileserver_list_cache_time": 20,
                "pillar_roots": {"base": [str(self.pillar_root)]},
                **(master_overrides or {}),
            },
        )

    # --- lifecycle -------------------------------------------------------

    def start(self) -> SaltCluster:
        """Start the master; stopped half-way (Ctrl-C too), it does not stay behind."""
        ensure_bridge()  # the master listens on the bridge's address, before any host exists
        try:
            with step("salt-master start"):
                self.master.start(start_timeout=120)
            # As README asks of an operator once: the upgrade's plan is the formula's runner.
            synced = self.salt_run("saltutil.sync_runners", timeout=120)
            assert synced.returncode == 0, synced.stdout + synced.stderr
        except BaseException:
            self._terminate_master()
            raise
        return self

    def stop(self) -> None:
        """Hosts (and the minions in them) first, then their keys, then the master.

        Each even if one before failed or Ctrl-C (or SIGTERM) came meanwhile:
        the hosts not yet removed and the master go in any case.
        """
        errors = []
        try:
            for minion_id in list(self.hosts):
                try:
                    self.remove_minion(minion_id)
                except Exception as exc:  # the other hosts must go too
                    errors.append(f"{minion_id}: {exc}")
        finally:
            for host in self.hosts.values():
                host.destroy()
            self.hosts.clear()
            self._terminate_master()
        assert not errors, errors

    def _terminate_master(self) -> None:
        """Its processes all go: salt-factories unregisters its own exit handler before it kills them."""
        with deferred_signals():
            self.master.terminate()

    def __enter__(self) -> SaltCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- pillar ----------------------------------------------------------

    def write_pillars(self) -> None:
        """top.sls maps each minion id to its own sls (after the tree's entries, if any: Salt merges in
        the top's order, a later sls overriding); the master reads them at every pillar compile."""
        top = {"base": {**self.tree_top, **{minion_id: [pillar_sls(minion_id)] for minion_id in self.pillars}}}
        (self.pillar_root / "top.sls").write_text(yaml.safe_dump(top, sort_keys=False))
        for minion_id, pillar in self.pillars.items():
            (self.pillar_root / f"{pillar_sls(minion_id)}.sls").write_text(yaml.safe_dump(pillar))

    def set_pillar(self, minion_id: str, pillar: dict) -> None:
        """Replace one minion's pillar; state runs see it at once, ``pillar.get`` after ``refresh_pillar``."""
        self.pillars[minion_id] = pillar
        self.write_pillars()

    def refresh_pillar(self, tgt: str = "*") -> None:
        refreshed = self.salt(tgt, "saltutil.refresh_pillar", "wait=True", timeout=60)
        assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr

    # --- minions ---------------------------------------------------------

    def add_minion(self, minion_id: str, pillar: dict, *, kind: str = "systemd") -> TestHost:
        return self.add_minions({minion_id: pillar}, kind=kind)[minion_id]

    def add_minions(
        self, pillars: dict[str, dict], *, kind: str = "systemd", salt_versions: dict[str, str] | None = None
    ) -> dict[str, TestHost]:
        """A test host per minion id (named after it), its minion answering the master, modules synced.

        ``kind``: the hosts' root (support.host_roots' ``HOST_KINDS``). All start before
        any is waited for: a minion takes about 2 s to reach the master.
        ``salt_versions``: minion id -> an older Salt release its minion runs (``minion_venv``).
        """
        for minion_id, version in (salt_versions or {}).items():
            self.minion_venvs[minion_id] = minion_venv(version)
        with step("minion start"):
            for minion_id, pillar in pillars.items():
                self.set_pillar(minion_id, pillar)
                self._start_host(minion_id, kind)
            for minion_id in pillars:
                self._wait_for_minion(minion_id)
            targets = ",".join(pillars)
            synced = self.salt(targets, "saltutil.sync_all", tgt_type="list", timeout=120)
        assert synced.returncode == 0 and isinstance(synced.data, dict), synced.stdout + synced.stderr
        self.synced.update(synced.data)
        return {minion_id: self.hosts[minion_id] for minion_id in pillars}

    def _start_host(self, minion_id: str, kind: str) -> None:
        self.delete_key(minion_id)  # a leftover key would get the new minion's key Denied
        venv = self.minion_venvs.get(minion_id)
        # A minion on a Python of its own (as Salt's onedir packages carry one) sees it at the same path.
        home = python_home(venv) if venv else None
        host = new_host(
            minion_id, kind=kind, address=host_address(self.next_number), also_shared=(home,) if home else ()
        )
        self.next_number += 1
        self.hosts[minion_id] = host  # before it starts, so that stop() finds a half-started host too
        host.start()
        no_route_out(host)
        self._start_minion(host, minion_id)

    def _start_minion(self, host: TestHost, minion_id: str) -> None:
        """A salt-minion daemon inside ``host``, pointed at the master over the bridge."""
        conf = host.path(MINION_CONF)
        conf.mkdir(parents=True)
        (conf / "minion").write_text(
            yaml.safe_dump(
                {
                    "id": minion_id,
                    "master": BRIDGE_ADDRESS,
                    "master_port": self.master.config["ret_port"],
                    "publish_port": self.master.config["publish_port"],
                    "root_dir": MINION_ROOT,
                    "log_level_logfile": "debug",
                    "acceptance_wait_time": 1,
                }
            )
        )
        self._run_minion_daemon(host, minion_id)

    def start_minion_again(self, minion_id: str) -> None:
        """The salt-minion of ``minion_id`` started again (its host booted since), once it answers."""
        self._run_minion_daemon(self.hosts[minion_id], minion_id)
        self._wait_for_minion(minion_id)

    def _run_minion_daemon(self, host: TestHost, minion_id: str) -> None:
        """salt-minion as a daemon in ``host``, from the venv of the Salt release this minion runs."""
        salt_minion = self.minion_venvs.get(minion_id, REPO / ".venv") / "bin" / "salt-minion"
        host.sh(f"setsid {salt_minion} -c {MINION_CONF} -d </dev/null >/dev/null 2>&1", timeout=60)

    def _wait_for_minion(self, minion_id: str, timeout: float = MINION_START_TIMEOUT) -> None:
        """Until the master has the minion's key and the minion answers test.ping."""
        accepted = Path(self.master.config["pki_dir"]) / "minions" / minion_id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if accepted.exists():
                pinged = self.salt(minion_id, "test.ping", timeout=PING_TIMEOUT)
                if pinged.returncode == 0 and pinged.data == {minion_id: True}:
                    return
            time.sleep(0.5)
        pytest.fail(f"minion {minion_id} did not answer the master within {timeout}s\n{self.minion_log(minion_id)}")

    def restart_minion(self, minion_id: str, timeout: float = MINION_START_TIMEOUT) -> None:
        """Stop the minion daemon (by its pid file) and start it again: it rereads its configuration."""
        host = self.hosts[minion_id]
        pid = int(host.path(f"{MINION_ROOT}/var/run/salt-minion.pid").read_text())
        host.run(["kill", str(pid)])
        with step("minion start"):
            host.wait_for(f"! kill -0 {pid} 2>/dev/null", timeout=timeout)
            self._run_minion_daemon(host, minion_id)
            self._wait_for_minion(minion_id, timeout)

    def minion_log(self, minion_id: str) -> str:
        log = self.hosts[minion_id].path(f"{MINION_ROOT}/var/log/salt/minion")
        return log.read_text(errors="replace")[-5000:] if log.exists() else "(no minion log)"

    def remove_minion(self, minion_id: str) -> None:
        """Destroy the host (its minion dies with it) and delete the minion's key."""
        self.hosts[minion_id].destroy()
        del self.hosts[minion_id]
        self.delete_key(minion_id)

    def delete_key(self, minion_id: str) -> None:
        deleted = self.master.salt_key_cli().run("-y", "-d", minion_id, _timeout=30)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr

    # --- running things --------------------------------------------------

    def salt(self, tgt: str, *args: str, tgt_type: str = "glob", timeout: float = 120) -> SaltResult:
        """``salt <tgt> <args>``; ``data`` is minion -> return (``--static``: one JSON document for all)."""
        flags = [] if tgt_type == "glob" else [f"--{tgt_type}"]
        ran = self.master.salt_cli().run(
            *flags, "--static", f"--timeout={int(timeout)}", *args, minion_tgt=tgt, _timeout=timeout + 30
        )
        return SaltResult.parse(ran.returncode, ran.stdout, ran.stderr)

    def apply(self, tgt: str, *args: str, tgt_type: str = "glob", timeout: float = APPLY_TIMEOUT) -> dict[str, dict]:
        """``state.apply`` on ``tgt`` (a highstate without an sls): minion -> its state results.

        Fails, with salt's output, when a minion returned no state results (a
        render error is a list of strings) or the targeted minions did not all
        answer.
        """
        with step("deploy (state.apply)"):
            ran = self.salt(tgt, "state.apply", *args, tgt_type=tgt_type, timeout=timeout)
        returned = ran.data if isinstance(ran.data, dict) else {}
        not_states = {minion: result for minion, result in returned.items() if not isinstance(result, dict)}
        expected = self.targeted(tgt, tgt_type)
        assert returned and not not_states and expected <= set(returned), (
            f"state.apply on {tgt}: rc={ran.returncode}; no state results from "
            f"{sorted(expected - set(returned)) or sorted(not_states)}\n{ran.stdout}\n{ran.stderr}"
        )
        return returned

    def targeted(self, tgt: str, tgt_type: str) -> set[str]:
        """The minions of this cluster a glob or list target names (others: none checked)."""
        if tgt_type == "list":
            return set(tgt.split(","))
        if tgt_type == "glob":
            return {minion_id for minion_id in self.hosts if fnmatchcase(minion_id, tgt)}
        return set()

    def salt_run(self, *args: str, timeout: float = APPLY_TIMEOUT, **kwargs: Any) -> SaltResult:
        """``salt-run <args> key=<json>...``: return code, parsed JSON ``data``, raw ``stdout``/``stderr``."""
        ran = self.master.salt_run_cli().run(*args, _timeout=timeout, **kwargs)
        return SaltResult.parse(ran.returncode, ran.stdout, ran.stderr)

    def orchestrate(self, sls: str, pillar: dict | None = None, timeout: float = APPLY_TIMEOUT) -> SaltResult:
        """``salt-run state.orchestrate <sls> pillar=<json>``; ``data`` is the parsed result, if any."""
        kwargs = {"pillar": pillar} if pillar is not None else {}
        with step("orchestrate (salt-run)"):
            return self.salt_run("state.orchestrate", sls, timeout=timeout, **kwargs)

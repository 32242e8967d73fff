"""salt-call --local inside a test host (``MasterlessSalt``) and what one state.apply returned (``StateRun``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from support.hosts import TestHost
from support.paths import REPO, formula_tree


class MasterlessSalt:
    """salt-call --local inside a test host, with the formula (``formula_tree``) as file_roots and a test pillar."""

    CONF = "/etc/salt-test"

    def __init__(
        self,
        host: TestHost,
        pillar: dict | None = None,
        extra_file_roots: tuple[str, ...] = (),
        salt_venv: Path = REPO / ".venv",
        formula_root: Path | None = None,
    ) -> None:
        """``salt_venv``: the Salt that runs salt-call (the tooling venv; another, e.g. a minion venv of its own
        Python on a host of another Debian release, which the host must see: ``host_roots.python_home``).
        ``formula_root``: where the formula lies for Salt (default ``formula_tree()``: this clone's), e.g. where
        spm installed its package."""
        self.host = host
        self.salt_call = str(salt_venv / "bin" / "salt-call")
        conf = host.path(self.CONF)
        (conf / "pillar").mkdir(parents=True, exist_ok=True)
        (conf / "minion").write_text(
            yaml.safe_dump(
                {
                    "id": host.name,
                    "file_client": "local",
                    "root_dir": f"{self.CONF}/root",
                    "file_roots": {"base": [str(formula_root or formula_tree()), *extra_file_roots]},
                    "pillar_roots": {"base": [f"{self.CONF}/pillar"]},
                    "log_level_logfile": "debug",
                }
            )
        )
        (conf / "pillar" / "top.sls").write_text("base:\n  '*':\n    - test\n")
        self.set_pillar(pillar or {})
        self.call("saltutil.sync_all")

    def forget_file_lists(self) -> None:
        """Salt caches the state tree's file list for a while: after adding files, drop it."""
        shutil.rmtree(self.host.path(f"{self.CONF}/root/var/cache/salt/minion/file_lists"), ignore_errors=True)

    def changed_files(self) -> str:
        """Files changed under /etc, /var/lib, /opt, /var/log since this minion was set up (Salt's own aside)."""
        return self.host.run(
            [
                "find",
                "/etc",
                "/var/lib",
                "/opt",
                "/var/log",
                "-path",
                self.CONF,
                "-prune",
                "-o",
                "-newer",
                f"{self.CONF}/minion",
                "-print",
            ]
        ).stdout

    def set_pillar(self, pillar: dict) -> None:
        self.host.path(f"{self.CONF}/pillar/test.sls").write_text(yaml.safe_dump(pillar))
        # A readable copy for tests that change one part of the pillar.
        self.host.path(f"{self.CONF}/pillar/test.json").write_text(json.dumps(pillar))

    def call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.host.run(
            [self.salt_call, "-c", self.CONF, "--local", "--out=json", *args],
            check=check,
            timeout=900,
        )

    def apply(self, sls: str = "sentry", *args: str) -> StateRun:
        completed = self.call("state.apply", sls, "--retcode-passthrough", *args, check=False)
        return StateRun(completed)


class StateRun:
    """The outcome of one state.apply: per-state results, or the render error."""

    def __init__(self, completed: subprocess.CompletedProcess) -> None:
        self.returncode = completed.returncode
        self.stdout, self.stderr = completed.stdout, completed.stderr
        try:
            self.returned = json.loads(completed.stdout)["local"]
        except (ValueError, KeyError):
            self.returned = None

    @property
    def states(self) -> dict:
        return self.returned if isinstance(self.returned, dict) else {}

    @property
    def errors(self) -> str:
        """Render errors as one text (salt returns them as a list of strings)."""
        if isinstance(self.returned, list):
            return "\n".join(self.returned)
        return self.stdout + self.stderr

    def by_id(self, state_id: str) -> dict:
        (found,) = [result for key, result in self.states.items() if key.split("_|-")[1] == state_id]
        return found

    @property
    def changed(self) -> dict[str, dict]:
        """State id -> changes, of a run that succeeded: a failed one (a render error, a failing state)
        fails the test here, as its ``{}`` would pass for "nothing changed" (``changes_of_failed_run``)."""
        if not self.succeeded:
            raise AssertionError(
                f"state.apply failed (exit {self.returncode}); its changes prove nothing: "
                f"{self.failed or self.errors[-5000:]}"
            )
        return self.changes_of_failed_run

    @property
    def changes_of_failed_run(self) -> dict[str, dict]:
        """State id -> changes, whether the run succeeded or not: for tests of a run that must fail."""
        return {key.split("_|-")[1]: result["changes"] for key, result in self.states.items() if result["changes"]}

    @property
    def would_change(self) -> set[str]:
        """A dry run's (test=True) states that would change something (result None), of a run that succeeded."""
        if self.returncode != 0 or not self.states or self.failed:
            raise AssertionError(f"the dry run failed (exit {self.returncode}): {self.failed or self.errors[-5000:]}")
        return {key.split("_|-")[1] for key, result in self.states.items() if result["result"] is None}

    @property
    def failed(self) -> dict[str, str]:
        return {key: result["comment"] for key, result in self.states.items() if result["result"] is False}

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and bool(self.states) and not self.failed

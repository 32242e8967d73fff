"""The bookkeeping of one upgrade attempt: its timed steps, what it changed, and how to undo that.

Pure: no Salt functions and no dunders. Whatever acts on the host (the
journal beside the serverdir, stopping and starting, putting data back,
reinstalling) is handed in as callables, so a unit test can replay any
failure. ``sentry_upgrade`` reaches it as ``__utils__["sentry_attempt.new"]``
and ``__utils__["sentry_attempt.roll_back"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from salt.exceptions import CommandExecutionError

# What an attempt may change, each undone by roll_back (all False/None: nothing to undo).
NOTHING_CHANGED = {"stopped": False, "nginx_stopped": False, "backup": None, "installed": False}

# What roll_back needs from the host, by name: see roll_back().
ACTIONS = ("stop", "start", "start_nginx", "put_back", "exists", "installed", "reinstall", "answers")


class Steps:
    """Which step an upgrade is in, and how long each one took."""

    def __init__(self) -> None:
        self.current = "start"
        self.seconds: dict[str, float] = {}
        self._started = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[self.current] = round(now - self._started, 2)
        self.current, self._started = name, now

    def done(self) -> dict[str, float]:
        self("done")
        self.seconds.pop("start", None)
        return self.seconds


class Attempt:
    """One upgrade attempt: its steps (timed) and what it changed so far, kept in memory for the rollback
    and in the journal beside the serverdir, written before each change, so that a crash leaves a trail
    for sentry_data.recover instead of an empty server.

    ``journal``: ``begin(serverdir, operation, **facts)``, ``update(serverdir, **facts)`` and
    ``end(serverdir)``, as sentry_journal has them.
    """

    def __init__(self, operation: str, serverdir: str, facts: dict, journal: Mapping[str, Callable]) -> None:
        self.steps = Steps()
        self.changed = dict(NOTHING_CHANGED)
        self._operation, self._serverdir, self._facts = operation, serverdir, facts
        self._journal, self._begun = journal, False

    def step(self, name: str) -> None:
        self.steps(name)
        if self._begun:
            self._journal["update"](self._serverdir, step=name)

    def begin(self) -> None:
        """From here on the attempt changes things: refuses over another's trail."""
        self._journal["begin"](self._serverdir, self._operation, step=self.steps.current, **self._facts)
        self._begun = True

    def mark(self, **changes) -> None:
        """Record ``changes`` before making them."""
        self.changed.update(changes)
        self._journal["update"](self._serverdir, **changes)

    def end(self) -> None:
        """The trail goes, if this attempt made one: refused at begin(), the trail is another's."""
        if self._begun:
            self._journal["end"](self._serverdir)


def new(operation: str, config: dict, version_before: str, version: str, journal: Mapping[str, Callable]) -> Attempt:
    """An attempt at ``operation`` ('upgrade', 'replica upgrade') on the instance of ``config``."""
    facts = {"program": config["program"], "version_before": version_before, "version": version}
    return Attempt(operation, config["serverdir"], facts, journal)


def by_hand(state: dict, version: str, config: dict, putting_back: bool) -> list[str]:
    """What an operator must still do, in order, when the rollback of ``state`` broke off (``putting_back``:
    it had data or a package to put back, so the server is to be stopped first)."""
    todo = [f"stop {config['program']}"] if state["stopped"] and putting_back else []
    if state["backup"]:
        todo.append(f"put {state['backup']} back at {config['serverdir']}")
    if state["installed"]:
        todo.append(f"install {config['package']}={version}")
    if state["stopped"]:
        todo.append(f"start {config['program']}")
    if state["nginx_stopped"]:
        todo.append(f"start {config['nginx_service']}")
    return todo


def roll_back(
    state: dict, version: str, config: dict, act: Mapping[str, Callable], settled: Callable[[], None] = lambda: None
) -> str:
    """Undo what an attempt changed (``state``, as Attempt.changed); what was done, or raise naming what is left.

    ``act`` (see ACTIONS): ``stop()``, ``start()``, ``start_nginx()``, ``put_back(serverdir, backup)``
    returning where what stood there went (or None), ``exists(path)``, ``installed()`` the package's version,
    ``reinstall(version)``, ``answers()`` whether the server answers. ``settled`` runs once data and
    package are back, before anything starts (it ends the journal).
    """
    done, serverdir = [], config["serverdir"]
    if state["backup"] and not act["exists"](state["backup"]):  # named before the move, which never happened
        done.append(f"the data never left {serverdir}")
        state["backup"] = None
    putting_back = bool(state["backup"] or state["installed"])
    try:
        if state["stopped"] and putting_back:
            act["stop"]()  # nothing serves while data and package go back
        if state["backup"]:
            failed = act["put_back"](serverdir, state["backup"])
            done.append((f"new data kept in {failed}, " if failed else "") + f"old data back in {serverdir}")
            state["backup"] = None
        if state["installed"] and act["installed"]() != version:
            act["reinstall"](version)
            done.append(f"{config['package']} {version} reinstalled")
        settled()
        if state["stopped"] and not putting_back and act["answers"]():
            done.append("server still running")  # its stop did not take: nothing else had changed
        elif state["stopped"]:
            act["start"]()
            done.append("server running")
        if state["nginx_stopped"]:
            act["start_nginx"]()
            done.append("nginx running")
    except Exception as exc:
        left = ", ".join(by_hand(state, version, config, putting_back))
        raise CommandExecutionError(
            f"ROLLBACK FAILED ({exc}) after: {'; '.join(done) or 'nothing'}. Once the cause is fixed, "
            f"'salt-call sentry_data.recover' finishes it; or by hand: {left}."
        ) from None
    return "; ".join(done) or "nothing had changed"

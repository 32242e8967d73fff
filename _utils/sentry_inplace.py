"""The steps of an in-place upgrade, between the server's stop and its health check.

For a master or a replica whose serverdir the new package's devpi-server runs
as it is (``_utils/sentry_method.py``): snapshot the stopped serverdir to
``_data-backup-<timestamp>`` (``_utils/sentry_snapshot.py``), install the
new version, start on the same serverdir, then check it (a master: it holds
what it held before the stop; a replica: it caught up). The attempt's
journal names the snapshot before it is made and keeps it as the ``backup``
once whole, so both the attempt's rollback and ``sentry_data.recover`` put
it back over whatever the new version did to the serverdir.

Pure bookkeeping: whatever acts on the host is handed in as callables
(``act``), as sentry_attempt.roll_back takes them, so a unit test can replay
each step. Reached as ``__utils__["sentry_inplace.master"]`` and
``__utils__["sentry_inplace.replica"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

# What the steps need from the host, by name.
ACTIONS = ("new_path", "snapshot", "install", "start", "check")


def _snapshot(attempt, act: Mapping[str, Callable]) -> dict:
    """Named in the journal before it is made, recorded as the backup to put back once whole."""
    attempt.step("snapshot")
    path = act["new_path"]()
    attempt.mark(snapshot=path)
    made = act["snapshot"](path)
    attempt.mark(backup=path)
    return made


def _install_and_start(attempt, act: Mapping[str, Callable]) -> None:
    attempt.step("install")
    attempt.mark(installed=True)
    act["install"]()
    attempt.step("start server")
    attempt.mark(serve=True)  # the package's sentry-server serves over a trail only when told so
    act["start"]()


def master(attempt, act: Mapping[str, Callable]) -> dict:
    """After the stop: snapshot, install, start on the same serverdir, health check (``act["check"]()``
    compares with the state read before the stop and runs devpi-fsck). Returns the result's fields."""
    snapshot = _snapshot(attempt, act)
    _install_and_start(attempt, act)
    attempt.step("health check")
    return {"snapshot": snapshot, "health": act["check"]()}


def replica(attempt, act: Mapping[str, Callable]) -> dict:
    """After the stop: snapshot, install, start on the same serverdir, catch up (``act["check"]()``
    waits until the replica follows its master). Returns the result's fields."""
    snapshot = _snapshot(attempt, act)
    _install_and_start(attempt, act)
    attempt.step("catch up")
    return {"snapshot": snapshot, "synced": act["check"]()}

"""The suite split into shards that run side by side (script/test runs two), each a test run of its own.

With ``--shard-queue DIR`` (script/test's way) every shard collects the same
modules and takes them one at a time from a queue shared through DIR,
longest first by the seconds a module usually takes (``MODULE_SECONDS``; a
module not listed counts as ``UNKNOWN_SECONDS``): a shard that is free takes
the next module no other shard took, so the shards end together even when
the figures are off. ``--shard K/N`` alone deals the modules out beforehand
the same way (longest first, each to the shard with the least so far) and
deselects the rest. Either way a module stays whole within one shard: its
module-scoped hosts are made once.

Shards share the machine, not their hosts: script/test gives each its own
SENTRY_TEST_PREFIX and SENTRY_TEST_HOST_OFFSET, as any two test runs on one
machine have (support/hosts.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

# Seconds each module's tests took (setup, call, teardown over 1 s) in a CI rehearsal on a 2-core machine,
# both shards running.
# Only the order matters: a stale figure costs balance, never a test.
MODULE_SECONDS = {
    "test_crash_replica.py": 870,
    "test_crash.py": 590,
    "test_upgrade.py": 510,
    "test_monitor.py": 460,
    "test_backup.py": 450,
    "test_debian13.py": 390,
    "test_instances.py": 310,
    "test_health.py": 210,
    "test_fleet.py": 210,
    "test_mirror.py": 190,
    "test_environments.py": 160,
    "test_cluster.py": 150,
    "test_interrupt.py": 140,
    "test_bad_input.py": 140,
    "test_deploy.py": 130,
    "test_upgrade_inplace.py": 130,
    "test_formula.py": 120,
    "test_package.py": 120,
    "test_admin.py": 110,
    "test_lockdown.py": 80,
    "test_formula_package.py": 80,
    "test_booted.py": 80,
    "test_dry_run.py": 70,
    "test_secrets.py": 70,
    "test_salt_pythons.py": 70,
    "test_ipv6.py": 70,
    "test_formula_master.py": 60,
    "test_exposure.py": 60,
    "test_cache.py": 60,
    "test_readme_order.py": 50,
    "test_ldap.py": 50,
    "test_loader_admin.py": 50,
    "test_loader_program.py": 50,
    "test_spm.py": 20,
    "test_apt_repo.py": 15,
}
UNKNOWN_SECONDS = 120
UNIT_SECONDS = 1  # test/unit: no hosts
_SHARD = re.compile(r"^([1-9][0-9]*)/([1-9][0-9]*)$")


def parse(value: str) -> tuple[int, int]:
    """``K/N`` as (K, N), 1 <= K <= N."""
    found = _SHARD.match(value)
    if not found or int(found.group(1)) > int(found.group(2)):
        raise pytest.UsageError(f"--shard wants K/N with 1 <= K <= N (e.g. 1/2), got {value!r}")
    return int(found.group(1)), int(found.group(2))


def _seconds(module: str) -> int:
    """``module`` is a node id's path (test/test_crash.py, test/unit/test_journal.py)."""
    if "/unit/" in f"/{module}":
        return UNIT_SECONDS
    return MODULE_SECONDS.get(module.rsplit("/", 1)[-1], UNKNOWN_SECONDS)


def deal(modules: list[str], shards: int) -> list[list[str]]:
    """The modules of each shard: longest first, each to the shard with the least seconds so far."""
    weight = {module: _seconds(module) for module in modules}
    dealt: list[list[str]] = [[] for _ in range(shards)]
    load = [0] * shards
    for module in sorted(modules, key=lambda name: (-weight[name], name)):
        lightest = load.index(min(load))
        dealt[lightest].append(module)
        load[lightest] += weight[module]
    return dealt


def select(items: list[pytest.Item], shard: tuple[int, int]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected) of the collected ``items`` for shard (K, N)."""
    number, shards = shard
    modules = sorted({item.nodeid.split("::", 1)[0] for item in items})
    mine = set(deal(modules, shards)[number - 1])
    kept = [item for item in items if item.nodeid.split("::", 1)[0] in mine]
    return kept, [item for item in items if item.nodeid.split("::", 1)[0] not in mine]


def by_module(items: list[pytest.Item]) -> list[list[pytest.Item]]:
    """The items grouped by module, longest module first (collection order within a module)."""
    grouped: dict[str, list[pytest.Item]] = {}
    for item in items:
        grouped.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    return [grouped[module] for module in sorted(grouped, key=lambda name: (-_seconds(name), name))]


def _claimed(queue: Path, module: str) -> bool:
    return (queue / module.replace("/", "__")).exists()


def _claim(queue: Path, module: str) -> bool:
    """Take ``module`` for this shard unless another took it first (an exclusive create is atomic)."""
    try:
        os.close(os.open(queue / module.replace("/", "__"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def run_claiming(session: pytest.Session, queue: Path) -> None:
    """pytest's run loop, over the modules this shard claims from ``queue`` one after another: each shard
    takes the longest module no one has taken yet when it is free, so both end at about the same time
    whatever the modules' real lengths. A module is claimed only once the one before is done; its last
    test is told (``nextitem``) of the first module nobody has claimed yet, so that module-scoped fixtures
    are torn down as in a plain run and session-scoped ones kept."""
    modules = by_module(session.items)
    names = [items[0].nodeid.split("::", 1)[0] for items in modules]

    def claim_from(start: int) -> int | None:
        return next((number for number in range(start, len(modules)) if _claim(queue, names[number])), None)

    def unclaimed_from(start: int) -> int | None:
        return next((number for number in range(start, len(modules)) if not _claimed(queue, names[number])), None)

    current = claim_from(0)
    while current is not None:
        items = modules[current]
        for position, item in enumerate(items):
            if position + 1 < len(items):
                nextitem = items[position + 1]
            else:
                ahead = unclaimed_from(current + 1)
                nextitem = modules[ahead][0] if ahead is not None else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        current = claim_from(current + 1)

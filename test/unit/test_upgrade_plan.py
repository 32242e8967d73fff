"""The orchestrated upgrade's plan (_runners/sentry_upgrade.py): which steps run, in which order.

No master and no minion: ``make_plan`` gets what ``sentry_server.version``
and ``test.ping`` answered. The real orchestration is in test_upgrade.
"""

from __future__ import annotations

import itertools

import pytest
from support.loading import load

runner = load("_runners/sentry_upgrade.py", "sentry_upgrade_runner_unit")

OLD, NEW = "6.14.0-1", "6.20.3-1"
WANTED = {"version": NEW, "master": "m", "replicas": "r*", "front": "f"}


def at(package: str | None) -> dict:
    return {"ret": {"package": package, "server": None}, "retcode": 0}


def answers(master=OLD, replicas=(OLD, OLD), fronts=("f",)) -> dict:
    return {
        "master": {"m": at(master)},
        "replicas": {f"r{number}": at(version) for number, version in enumerate(replicas, 1)},
        "front": {front: {"ret": True, "retcode": 0} for front in fronts},
    }


def steps(plan: dict) -> list[str]:
    return [step.removeprefix(runner.STEP_PREFIX) for step in plan["steps"]]


def test_a_full_upgrade_drains_the_master_then_remakes_each_replica():
    plan = runner.make_plan(WANTED, answers())
    assert not plan["error"]
    assert steps(plan) == [
        "plan", "pillar-refreshed", "replicas-caught-up", "reads-to-replicas", "master",
        "reads-to-master", "replica-r1", "replica-r2", "reads-to-all", "summary",
    ]  # fmt: skip
    assert plan["reads_elsewhere"] == {"master": True, "replicas": True}
    assert plan["minions"] == ["m", "r1", "r2"]
    assert plan["before"] == {"m": OLD, "r1": OLD, "r2": OLD}


def test_each_step_waits_for_the_one_before():
    plan = runner.make_plan(WANTED, answers())
    chain = plan["steps"]
    assert chain[0] not in plan["after"]
    assert all(plan["after"][step] == previous for previous, step in itertools.pairwise(chain))


def test_everything_at_the_version_is_one_step_that_changes_nothing():
    plan = runner.make_plan(WANTED, answers(NEW, (NEW, NEW)))
    assert steps(plan) == ["nothing-to-do"]
    assert plan["summary"] == "all of m, r1, r2 run sentry 6.20.3-1"


def test_a_master_already_there_leaves_the_replicas_there_alone():
    plan = runner.make_plan(WANTED, answers(NEW, (NEW, OLD)))
    assert steps(plan) == ["plan", "pillar-refreshed", "reads-to-master", "replica-r2", "reads-to-all", "summary"]
    assert plan["replicas_pending"] == ["r2"]


def test_an_upgraded_master_remakes_even_the_replicas_at_the_version():
    # A freshly imported master has a new identity: no replica can follow it as it is.
    plan = runner.make_plan(WANTED, answers(OLD, (NEW, NEW)))
    assert plan["replicas_pending"] == ["r1", "r2"]


def test_without_a_front_reads_stay_where_they_are():
    plan = runner.make_plan({**WANTED, "front": ""}, answers(fronts=()))
    assert steps(plan) == ["plan", "pillar-refreshed", "master", "replica-r1", "replica-r2", "summary"]
    assert plan["reads_elsewhere"] == {"master": False, "replicas": False}
    assert "clients reading from the master see it go" in plan["summary"]


def test_without_replicas_reads_are_down_while_the_master_upgrades():
    plan = runner.make_plan({**WANTED, "replicas": ""}, answers(replicas=()))
    assert steps(plan) == ["plan", "pillar-refreshed", "master", "reads-to-all", "summary"]
    assert plan["reads_elsewhere"]["master"] is False
    assert "reads are down while the master upgrades" in plan["summary"]


def test_a_replica_target_that_also_matches_the_master_does_not_remake_it():
    given = answers()
    given["replicas"]["m"] = at(OLD)
    assert runner.make_plan(WANTED, given)["replicas"] == ["r1", "r2"]


@pytest.mark.parametrize(
    ("masters", "message"),
    [
        ({}, "sentry:upgrade:master must match exactly one minion that answers, matched []"),
        ({"m": at(OLD), "n": at(OLD)}, "matched ['m', 'n']"),
        ({"m": at(None)}, "m (master) has no sentry deployed (apply sentry there first)"),
        ({"m": {"ret": "'sentry_server.version' is not available.", "retcode": 1}}, "is not available"),
    ],
)
def test_a_master_that_cannot_upgrade_refuses_with_its_reason(masters, message):
    given = answers()
    given["master"] = masters
    plan = runner.make_plan(WANTED, given)
    assert message in plan["error"] and plan["steps"] == []


def test_a_front_that_does_not_answer_refuses():
    plan = runner.make_plan(WANTED, answers(fronts=()))
    assert plan["error"] == "sentry:upgrade:front f matched no minion that answers"


@pytest.mark.parametrize("key", ["version", "master"])
def test_a_missing_setting_is_named_before_any_minion_is_asked(key, monkeypatch):
    monkeypatch.setattr(runner, "_ask", lambda *_: pytest.fail("asked the minions"), raising=True)
    assert f"sentry:upgrade:{key}" in runner.plan(**{**WANTED, key: ""})["error"]

"""The plan of an orchestrated upgrade: who goes, in which order, and where reads go meanwhile.

``sentry/upgrade.sls`` renders the steps this plan names, and nothing else;
the plan itself changes nothing anywhere. It asks each targeted minion once
which package its instance runs (``sentry_server.version``) and decides:

- minions already at the version are left alone;
- the master upgrades if it is not at the version; every replica is then
  remade from it (a freshly imported master has a new identity), otherwise
  only the replicas not at the version;
- reads go to the replicas while the master upgrades only if there are
  replicas and a front to send them there;
- how the master goes, as the master itself would choose it
  (``sentry_inplace.method``): in place when the new package's devpi
  database version (from apt's index) equals its serverdir's, otherwise (or
  with ``method: export``) by export and import. The master decides again
  once the deb is downloaded; ``sentry_upgrade.last`` says what it did.

The orchestration runs it on the master, so the master needs the formula's
runners once: ``salt-run saltutil.sync_runners``.

:depends: the formula's ``_modules`` synced to the minions it targets
"""

from __future__ import annotations

import itertools

import salt.client

__virtualname__ = "sentry_upgrade"

STEP_PREFIX = "sentry-upgrade-"
ASK_TIMEOUT = 30


def __virtual__():
    return __virtualname__


def plan(
    version: str = "", master: str = "", replicas: str = "", front: str = "", method: str = "auto", **_ignored
) -> dict:
    """
    The steps an upgrade to ``version`` takes: ``master``, ``replicas`` and
    ``front`` are compound targets, ``method`` auto or export
    (``sentry:upgrade`` in pillar). The answer
    holds ``error`` (empty when the upgrade can go), the minions and their
    versions before, and ``steps`` in order with the step each one comes
    ``after``. It asks the minions; it changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run sentry_upgrade.plan version=6.20.3-1 master=sentry-master replicas='sentry-replica*' front=sentry-front
    """
    wanted = {"version": version, "master": master, "replicas": replicas, "front": front}
    missing = _missing_setting(wanted)
    if missing:
        return {"error": missing, "steps": []}
    answers = {
        "master": _ask(master, "sentry_server.version"),
        "replicas": _ask(replicas, "sentry_server.version"),
        "front": _ask(front, "test.ping"),
    }
    if len(answers["master"]) == 1:
        answers["method"] = _ask(master, "sentry_inplace.method", [version], {"method": method})
    return make_plan(wanted, answers)


def _ask(target: str, function: str, arg: list | None = None, kwarg: dict | None = None) -> dict:
    """Each minion matching ``target`` that answers: ``{id: {"ret": ..., "retcode": ...}}``."""
    if not target:
        return {}
    client = salt.client.get_local_client(mopts=__opts__)
    try:
        return dict(
            client.cmd(
                target, function, arg or [], tgt_type="compound", timeout=ASK_TIMEOUT, full_return=True, kwarg=kwarg
            )
        )
    finally:
        client.destroy()


def _missing_setting(wanted: dict) -> str:
    if not wanted["version"]:
        return "sentry:upgrade:version (the Debian version to go to, e.g. 6.20.3-1) is required"
    if not wanted["master"]:
        return "sentry:upgrade:master (the target of the master minion) is required"
    return ""


def _package(answer) -> str:
    """The package version a ``sentry_server.version`` answer names, or "" (no sentry, or no answer)."""
    ret = answer.get("ret") if isinstance(answer, dict) else None
    return (ret.get("package") or "") if isinstance(ret, dict) else ""


def make_plan(wanted: dict, answers: dict) -> dict:
    """The plan from what the minions answered (see ``plan``); pure, so that it can be tested alone."""
    masters, fronts = answers["master"], answers["front"]
    if len(masters) != 1:
        return _refused(f"sentry:upgrade:master must match exactly one minion that answers, matched {sorted(masters)}")
    if wanted["front"] and not fronts:
        return _refused(f"sentry:upgrade:front {wanted['front']} matched no minion that answers")
    master_id = next(iter(masters))
    replica_ids = sorted(set(answers["replicas"]) - {master_id})
    before = {master_id: _package(masters[master_id])}
    before.update({replica: _package(answers["replicas"][replica]) for replica in replica_ids})
    if not before[master_id]:
        answer = masters[master_id].get("ret") if isinstance(masters[master_id], dict) else masters[master_id]
        return _refused(f"{master_id} (master) has no sentry deployed (apply sentry there first): {answer}")
    version = wanted["version"]
    master_pending = before[master_id] != version
    replicas_pending = [replica for replica in replica_ids if master_pending or before[replica] != version]
    front_ids = sorted(fronts)
    result = {
        "method": _method(answers.get("method", {}).get(master_id)) if master_pending else None,
        "error": "",
        "version": version,
        "master": master_id,
        "replicas": replica_ids,
        "fronts": front_ids,
        "minions": [master_id, *replica_ids],
        "before": before,
        "master_pending": master_pending,
        "replicas_pending": replicas_pending,
        # Reads stay up while the master is away only if a front can send them to replicas,
        # and while a replica is away only if a front takes it out of rotation.
        "reads_elsewhere": {"master": bool(replica_ids and front_ids), "replicas": bool(front_ids)},
    }
    result["steps"] = _steps(result)
    result["after"] = _after(result["steps"])
    result["summary"] = _summary(result)
    return result


def _method(answer) -> dict:
    """What ``sentry_inplace.method`` answered for the master; ``decided after download`` when it could not
    tell before (no such function there yet, or the version's database version is not in apt's index)."""
    ret = answer.get("ret") if isinstance(answer, dict) else None
    if not isinstance(ret, dict) or "method" not in ret:
        return {"method": "decided after download", "why": f"the master could not tell before: {ret}"}
    if not ret.get("target_database_version") and not ret["why"].startswith("sentry:upgrade:method"):
        return {**ret, "method": "decided after download"}
    return ret


def _refused(error: str) -> dict:
    return {"error": error, "steps": []}


def _steps(plan_: dict) -> list[str]:
    """The ids of the steps to render, in order; each waits for the one before."""
    if not plan_["master_pending"] and not plan_["replicas_pending"]:
        return [f"{STEP_PREFIX}nothing-to-do"]
    names = ["plan", "pillar-refreshed"]
    if plan_["master_pending"]:
        if plan_["reads_elsewhere"]["master"]:
            names += ["replicas-caught-up", "reads-to-replicas"]
        names.append("master")
    if plan_["fronts"] and plan_["replicas_pending"]:
        names.append("reads-to-master")
    names += [f"replica-{replica}" for replica in plan_["replicas_pending"]]
    if plan_["fronts"]:
        names.append("reads-to-all")
    names.append("summary")
    return [STEP_PREFIX + name for name in names]


def _after(steps: list[str]) -> dict[str, str]:
    """Each step's predecessor (the first has none)."""
    return {step: previous for previous, step in itertools.pairwise(steps)}


def _summary(plan_: dict) -> str:
    before, version = plan_["before"], plan_["version"]
    if not plan_["master_pending"] and not plan_["replicas_pending"]:
        return f"all of {', '.join(sorted(before))} run sentry {version}"
    master = plan_["master"]
    done = f", {plan_['method']['method']}: {plan_['method']['why']}" if plan_["master_pending"] else ", done"
    replicas = ", ".join(plan_["replicas"]) or "none: reads are down while the master upgrades"
    fronts = ", ".join(plan_["fronts"]) or "none: clients reading from the master see it go"
    return (
        f"sentry {version}: master {master} ({before[master]}{done}); replicas {replicas}; "
        f"front {fronts}. Before: {before}"
    )

"""Keep a flag file while this replica has what its master has (sentry.front reads only from such replicas).

    sentry-in-sync.py REPLICA_URL MASTER_URL FLAG [INTERVAL]

Every INTERVAL seconds (default 1) it asks the replica's /+status and its
master's. In sync: the replica answers, has finished its first sync, follows
the master it answers for (same uuid) and has reached the master's serial, or
was at it within the last CAUGHT_UP_WITHIN seconds (steady writes keep it a
change or two behind between two asks).
A master that does not answer leaves the verdict to the replica alone: it
has the last data there is, and the front needs it while the master is out.
The flag file is made or removed only when the verdict changes; the node's
nginx refuses the front's reads (503, the front tries the next node) while it
is missing. Run by supervisor (sentry.supervisor) with Debian's python3;
the standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

TIMEOUT = 5
CAUGHT_UP_WITHIN = 5  # seconds


def status(url: str) -> dict | None:
    """The ``result`` of ``url``/+status, or None when it does not answer it."""
    request = urllib.request.Request(url.rstrip("/") + "/+status", headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return json.load(response).get("result")
    except (OSError, ValueError):
        return None


def in_sync(replica: dict | None, master: dict | None, now: float | None = None) -> bool:
    """Whether reads may go to the replica: see the module's docstring."""
    if not replica or replica.get("role", "").upper() != "REPLICA" or replica.get("replica-in-sync-at") is None:
        return False
    if not master:
        return True
    if (replica.get("primary-uuid") or replica.get("master-uuid")) != master.get("uuid"):
        return False
    if replica.get("serial", -1) >= master.get("serial", 0):
        return True
    # Under steady writes it trails by a change or two between two asks: it is in sync if it was
    # at its master's serial a moment ago.
    caught_up_at = replica.get("replica-metadata-in-sync-at") or replica["replica-in-sync-at"]
    return (time.time() if now is None else now) - caught_up_at <= CAUGHT_UP_WITHIN


def set_flag(flag: str, wanted: bool) -> None:
    if wanted and not os.path.exists(flag):
        with open(flag + ".tmp", "w") as made:
            made.write(f"{time.time()}\n")
        os.replace(flag + ".tmp", flag)
    elif not wanted and os.path.exists(flag):
        os.remove(flag)


def main(argv: list[str]) -> int:
    replica_url, master_url, flag = argv[1:4]
    interval = float(argv[4]) if len(argv) > 4 else 1.0
    while True:
        master = status(master_url)  # the master's first: a serial the replica's can then reach
        set_flag(flag, in_sync(status(replica_url), master))
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

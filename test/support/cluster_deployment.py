"""The cluster test_cluster.py and test_upgrade.py deploy: a master node, two replicas and an nginx front.

Minion ids, the state top and each minion's pillar; the replicas follow the
master through the master node's nginx.
"""

from __future__ import annotations

import secrets

PRIMARY = "cl-primary"
REPLICAS = ("cl-replica1", "cl-replica2")
FRONT = "cl-front"
NODES = (PRIMARY, *REPLICAS)
STATE_TOP = {**{node: ["sentry"] for node in NODES}, FRONT: ["sentry.front"]}
ROOT_PASSWORD = "Cluster-Root-pw-19"
ALICE_PASSWORD = "Cluster-Alice-pw-23"
# Master and replicas must share it (else the replicas get 403 on /+changelog).
SECRET = secrets.token_urlsafe(32)


def cluster_pillars(addresses: dict[str, str], version: str) -> dict[str, dict]:
    """Minion id -> pillar: the master node, replicas following it through its nginx, the front.

    The master's nginx lets the replicas (not the front) read /+changelog and /+status.
    """
    package = {"source": "repo", "version": version}
    master = addresses[PRIMARY]
    pillars = {
        PRIMARY: {
            "sentry": {
                "package": package,
                "server": {"root_password": ROOT_PASSWORD, "role": "primary", "secret": SECRET, "no_root_pypi": True},
                "nginx": {
                    "replica_addresses": [addresses[replica] for replica in REPLICAS],
                    "limits": {"trusted_proxies": [addresses[FRONT]]},
                },
                "bootstrap": {
                    "users": {"alice": {"password": ALICE_PASSWORD}},
                    "indexes": {"alice/dev": {"bases": []}},
                },
            }
        },
        FRONT: {
            "sentry": {
                "front": {"master": f"{master}:80", "replicas": [f"{addresses[replica]}:80" for replica in REPLICAS]}
            }
        },
    }
    for replica in REPLICAS:
        pillars[replica] = {
            "sentry": {
                "package": package,
                "server": {"master_url": f"http://{master}", "secret": SECRET},
                # Clients come through the front: they, not it, are counted (sentry:nginx:limits).
                "nginx": {"limits": {"trusted_proxies": [addresses[FRONT]]}},
            }
        }
    return pillars

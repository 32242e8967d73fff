"""The single-host deployment's pillars that test_formula.py applies and test_bad_input.py spoils.

``master_pillar``: a primary from the given deb, offline, themed;
``REPLICA_OVERRIDE``: a replica beside it on the same host.
"""

from __future__ import annotations

ROOT_PASSWORD = "Formula-Root-pw-31"
TITLE = "ACME package index"


def master_pillar(deb) -> dict:
    return {
        "sentry": {
            "package": {"source": "deb", "deb": str(deb)},
            "server": {"root_password": ROOT_PASSWORD, "offline_mode": True, "role": "primary"},
            "theme": {"title": TITLE},
        }
    }


REPLICA_OVERRIDE = {
    "sentry": {
        "server": {
            "program": "sentry-replica",
            "serverdir": "/var/lib/sentry/replica",
            "port": 3142,
            "master_url": "http://127.0.0.1:3141",
            "role": "standalone",
            "offline_mode": False,
        },
        "nginx": {"site": "sentry-replica", "port": 8080},
    }
}

"""What a TLS listener offers, as Debian's sslscan (this machine's, script/bootstrap test) finds it from outside,
checked against Mozilla's "intermediate" profile (server side TLS guidelines 6.0)."""

from __future__ import annotations

import subprocess
from xml.etree import ElementTree

MOZILLA_INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
}


def assert_mozilla_intermediate(target: str) -> None:
    """``target`` (address:port) offers TLS 1.2 and 1.3 alone, TLS 1.2 ciphers from the profile's list (no DHE,
    no CBC), X25519 among its groups."""
    scanned = subprocess.run(
        ["sslscan", "--xml=-", "--no-colour", target], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    report = ElementTree.fromstring(scanned[scanned.index("<?xml") :])  # noqa: S314 - our own scanner's report
    protocols = {f"{p.get('type')}{p.get('version')}" for p in report.iter("protocol") if p.get("enabled") == "1"}
    assert protocols == {"tls1.2", "tls1.3"}, (target, protocols)
    accepted = [c for c in report.iter("cipher") if c.get("status") in ("accepted", "preferred")]
    tls12 = {c.get("cipher") for c in accepted if c.get("sslversion") == "TLSv1.2"}
    assert tls12 and tls12 <= MOZILLA_INTERMEDIATE_TLS12, (target, tls12)
    assert not [c.get("cipher") for c in accepted if "DHE-" in c.get("cipher", "").replace("ECDHE-", "")], target
    groups = {g.get("name") for g in report.iter("group")}
    assert "x25519" in groups, (target, groups)

"""sentry.package from an apt repository (package:source repo), pinned by package:version.

The repository is the local one of the built debs (support/aptrepo.py): the host has
no network. Going down to an older version matters for rolling back an upgrade.
"""

from __future__ import annotations

import pytest
from support.aptrepo import use_apt_repo
from support.debs import installed_version
from support.masterless import MasterlessSalt
from support.paths import deb_version_for

pytestmark = pytest.mark.slow

NEW_VERSION = deb_version_for()


def repo_pillar(version: str) -> dict:
    return {"sentry": {"package": {"source": "repo", "version": version}}}


def test_version_pins_the_package_up_and_down(bare_host, apt_repo, old_sentry_deb):
    old_version = old_sentry_deb.name.split("_")[1]
    use_apt_repo(bare_host, apt_repo)
    salt = MasterlessSalt(bare_host, repo_pillar(old_version))
    before = ""
    # Install the old one, upgrade, then downgrade (aptpkg adds --force-yes for that; see support/aptrepo.py).
    for version in (old_version, NEW_VERSION, old_version):
        salt.set_pillar(repo_pillar(version))
        run = salt.apply("sentry.package")
        assert run.succeeded, run.failed or run.errors
        assert run.changed["sentry-package-installed"] == {"sentry": {"old": before, "new": version}}
        assert installed_version(bare_host) == version
        before = version
    again = salt.apply("sentry.package")
    assert again.succeeded and again.changed == {}

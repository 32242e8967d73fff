"""The formula as an SPM package (script/build-spm): the formula alone, whatever the clone holds, and it deploys.

The package is built in a clone where README's two commands have run: its
tooling venv, build output and .salt-local/ (the generated root password
and secret) beside the formula. spm then installs it as under a salt-master
(its own formula and pillar folders), and that installed formula deploys
sentry on a test host.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.formula_pillars import master_pillar
from support.host_roots import new_host
from support.hosts import NAME_PREFIX
from support.masterless import MasterlessSalt
from support.paths import REPO

pytestmark = pytest.mark.slow

SECRET = "Spm-Secret-do-not-ship-7"
PACKAGED = {"FORMULA", "sentry", "_modules", "_states", "_utils", "_runners", "_beacons", "pillar.example"}
DOCS = {"README.md", "LICENSE", "docs"}


@pytest.fixture(scope="module")
def used_clone(tmp_path_factory) -> Path:
    """A clone of this repository as README's two commands leave it: a venv, build output, generated secrets."""
    clone = tmp_path_factory.mktemp("spm") / "sentry-formula"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    (clone / ".venv").symlink_to(REPO / ".venv")
    (clone / ".salt-local" / "pillar").mkdir(parents=True)
    (clone / ".salt-local" / "pillar" / "secrets.sls").write_text(f"sentry:\n  server:\n    root_password: {SECRET}\n")
    (clone / "build" / "hostroot-junk").mkdir(parents=True)
    (clone / "build" / "sentry_0.0-1_amd64.deb").write_bytes(b"not a deb")
    (clone / "sentry" / "untracked-notes.txt").write_text(SECRET)
    return clone


def build(clone: Path) -> Path:
    built = subprocess.run([str(clone / "script" / "build-spm")], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    return Path(built.stdout.strip().splitlines()[-1].split()[-1])


def test_the_package_holds_the_formula_alone(used_clone):
    package = build(used_clone)
    assert package.name == "sentry-0.1.0-1.spm" and package.parent == used_clone / "build" / "spm"
    with tarfile.open(package) as tar:
        files = [member for member in tar.getmembers() if member.isfile()]
        contents = b"".join(tar.extractfile(member).read() for member in files)
        # spm's own record of the package, beside its files: FORMULA as it is
        (record,) = [member for member in files if member.name == "sentry"]
        assert tar.extractfile(record).read() == (used_clone / "FORMULA").read_bytes()
    names = [member.name for member in files if member.name != "sentry"]
    assert all(name.startswith("sentry/") for name in names), names
    top = {name.split("/")[1] for name in names}
    assert top <= PACKAGED | DOCS and PACKAGED <= top, top
    tracked = subprocess.run(
        ["git", "ls-files", "--", *sorted(PACKAGED | DOCS)], cwd=used_clone, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(name.removeprefix("sentry/") for name in names) == sorted(tracked)
    assert SECRET.encode() not in contents


def test_the_installed_package_deploys(used_clone, sentry_deb):
    package = build(used_clone)
    # Where spm puts formulas under a salt-master (here inside this repository, which test hosts see).
    place = REPO / "build" / f"spm-installed-{NAME_PREFIX or 'run'}"
    shutil.rmtree(place, ignore_errors=True)
    conf = place / "conf"
    conf.mkdir(parents=True)
    (conf / "spm").write_text(
        "\n".join(
            f"{key}: {place / value}"
            for key, value in {
                "formula_path": "formulas",
                "pillar_path": "pillar",
                "reactor_path": "reactor",
                "spm_db": "packages.db",
                "spm_cache_dir": "cache",
                "spm_logfile": "spm.log",
                "spm_repos_config": "spm.repos",
            }.items()
        )
        + "\n"
    )
    try:
        installed = subprocess.run(
            [str(REPO / ".venv" / "bin" / "spm"), "-c", str(conf), "-y", "local", "install", str(package)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
        formulas = place / "formulas"
        assert (formulas / "sentry" / "init.sls").is_file() and (formulas / "_modules" / "sentry_pillar.py").is_file()
        assert (place / "pillar" / "sentry.sls.orig").is_file()  # pillar.example, for the operator to copy
        with new_host("spm") as host:
            salt = MasterlessSalt(host, master_pillar(sentry_deb), formula_root=formulas)
            applied = salt.apply("sentry")
            assert applied.succeeded, applied.failed or applied.errors
            assert host.run(["curl", "-fsS", "-o", "/dev/null", "http://localhost/+api"], check=False).returncode == 0
    finally:
        shutil.rmtree(place, ignore_errors=True)

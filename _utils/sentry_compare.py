"""What an export promises and what a server holds, and every way the two differ.

Pure functions over plain data, for ``sentry_health.check``: the
expected state is read from an export's ``dataindex.json`` (what
``devpi-export`` writes), the actual one from the server's JSON API (``GET /``
for users and indexes with their settings, ``GET /user/index`` for an index's
projects, ``GET /user/index/project`` for a project's versions and release
files with their hashes). Both come out in one shape::

    {"users": {name: {setting: value}},            # no secrets
     "indexes": {name: {setting: value}},
     "projects": {index: {project: [version, ...]}},   # indexes holding uploads (not mirrors)
     "files": {index: {project: {basename: {"version": v, "hashes": {algorithm: hexdigest}}}}}}

Project names are normalised (PEP 503). Reached as
``__utils__["sentry_compare.expected"]`` and friends.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse

# What devpi shows of a user over its API (its ``visible_keys``); the secrets
# (password, pwhash, pwsalt) are exported but never shown, so never compared.
USER_KEYS = ("email", "title", "description", "custom_data", "created", "modified")
RELEASE_FILE = "releasefile"
HASH_PREFERENCE = ("sha256", "blake2b", "sha512", "sha384", "sha224", "sha1", "md5")
SHOWN_DIFFERENCES = 25


def normalize(project: str) -> str:
    """A project's name as PEP 503 compares it (and as devpi's URLs carry it)."""
    return re.sub(r"[-_.]+", "-", project).lower()


def hashes_of(mapping: dict) -> dict[str, str]:
    """``{algorithm: hexdigest}`` of an export's file entry or a server's link (``hashes``, ``hash_spec``, ``md5``)."""
    found = dict(mapping.get("hashes") or {})
    spec = mapping.get("hash_spec") or ""
    if "=" in spec:
        algorithm, value = spec.split("=", 1)
        found.setdefault(algorithm, value)
    if mapping.get("md5"):
        found.setdefault("md5", mapping["md5"])
    return found


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_mirror(config: dict) -> bool:
    return config.get("type") == "mirror"


def expected(data: dict, export_path: str | None = None) -> dict:
    """The state the export ``data`` (its dataindex.json) describes.

    A release file the export lists without any hash is hashed from the
    exported file itself (``export_path``), streaming.
    """
    users = {name: {key: user[key] for key in USER_KEYS if key in user} for name, user in data.get("users", {}).items()}
    indexes, projects, files = {}, {}, {}
    for name, index in data.get("indexes", {}).items():
        indexes[name] = dict(index.get("indexconfig", {}))
        if _is_mirror(indexes[name]):
            continue
        projects[name] = {}
        for project, versions in index.get("projects", {}).items():
            projects[name].setdefault(normalize(project), set()).update(versions)
        files[name] = {}
        for entry in index.get("files", []):
            if entry.get("type") != RELEASE_FILE:
                continue
            hashes = hashes_of(entry.get("entrymapping", {}))
            if not hashes and export_path:
                hashes = {"sha256": _sha256_of(os.path.join(export_path, entry["relpath"]))}
            project = normalize(entry.get("projectname") or entry.get("project", ""))
            basename = os.path.basename(entry["relpath"])
            files[name].setdefault(project, {})[basename] = {"version": entry.get("version"), "hashes": hashes}
            if entry.get("version"):
                projects[name].setdefault(project, set()).add(entry["version"])
    projects = {
        index: {project: sorted(versions) for project, versions in by.items()} for index, by in projects.items()
    }
    return {"users": users, "indexes": indexes, "projects": projects, "files": files}


def stage_indexes(expected_state: dict, root: dict) -> list[str]:
    """The indexes whose projects are fetched: exported, on the server (``root``: GET /'s result), no mirror."""
    on_server = {
        f"{user}/{index}": config for user, info in root.items() for index, config in info.get("indexes", {}).items()
    }
    return sorted(name for name in expected_state["projects"] if name in on_server and not _is_mirror(on_server[name]))


def actual(root: dict, listings: dict[str, dict], pages: dict[tuple[str, str], dict]) -> dict:
    """The state a server holds: ``root`` is GET /'s result, ``listings`` GET /index's by index, ``pages``
    GET /index/project's by (index, project)."""
    users, indexes = {}, {}
    for name, info in root.items():
        users[name] = {key: info[key] for key in USER_KEYS if key in info}
        for index, config in info.get("indexes", {}).items():
            indexes[f"{name}/{index}"] = dict(config)
    projects = {index: {normalize(p): [] for p in listing.get("projects", [])} for index, listing in listings.items()}
    files: dict[str, dict] = {index: {} for index in listings}
    for (index, name), page in pages.items():
        project = normalize(name)
        projects[index][project] = sorted(page)
        found = files[index].setdefault(project, {})
        for version, data in page.items():
            for link in data.get("+links", []):
                if link.get("rel") == RELEASE_FILE:
                    basename = urllib.parse.unquote(link["href"].rsplit("/", 1)[-1])
                    found[basename] = {"version": version, "hashes": hashes_of(link)}
    return {"users": users, "indexes": indexes, "projects": projects, "files": files}


def _settings_differences(what: str, expected_settings: dict, actual_settings: dict) -> list[str]:
    """Each setting of the export that the server lacks or holds otherwise (newer defaults it adds are fine)."""
    found = []
    for key in sorted(expected_settings):
        if key not in actual_settings:
            found.append(f"{what}: {key} is not set, exported {expected_settings[key]!r}")
        elif actual_settings[key] != expected_settings[key]:
            found.append(f"{what}: {key} is {actual_settings[key]!r}, exported {expected_settings[key]!r}")
    return found


def _missing_and_added(prefix: str, expected: dict, actual: dict) -> list[str]:
    """What the export holds and the server lacks, then what the server holds beyond the export."""
    found = [f"{prefix}{name} is missing" for name in sorted(set(expected) - set(actual))]
    return found + [
        f"{prefix}{name} is on the server but not in the export" for name in sorted(set(actual) - set(expected))
    ]


def _named_differences(kind: str, expected_named: dict, actual_named: dict) -> list[str]:
    """Users or indexes missing, added, or with other settings."""
    found = _missing_and_added(f"{kind} ", expected_named, actual_named)
    for name in sorted(set(expected_named) & set(actual_named)):
        found += _settings_differences(f"{kind} {name}", expected_named[name], actual_named[name])
    return found


def _hash_difference(where: str, basename: str, expected_hashes: dict, actual_hashes: dict) -> str | None:
    common = [algorithm for algorithm in HASH_PREFERENCE if algorithm in expected_hashes and algorithm in actual_hashes]
    common += sorted(set(expected_hashes) & set(actual_hashes) - set(common))
    if not common:
        return (
            f"{where}: {basename} has no hash to compare (server: {', '.join(sorted(actual_hashes)) or 'none'}, "
            f"export: {', '.join(sorted(expected_hashes)) or 'none'})"
        )
    for algorithm in common:
        if expected_hashes[algorithm] != actual_hashes[algorithm]:
            return (
                f"{where}: {basename} has {algorithm} {actual_hashes[algorithm]} on the server, "
                f"{expected_hashes[algorithm]} in the export"
            )
    return None


def _file_differences(where: str, expected_files: dict, actual_files: dict) -> list[str]:
    """Release files of one project: missing, added, under another version, or with another hash."""
    found = _missing_and_added(f"{where}: ", expected_files, actual_files)
    for name in sorted(set(expected_files) & set(actual_files)):
        wanted, held = expected_files[name], actual_files[name]
        if wanted["version"] is not None and wanted["version"] != held["version"]:
            found.append(
                f"{where}: {name} is listed under version {held['version']}, exported under {wanted['version']}"
            )
        hash_difference = _hash_difference(where, name, wanted["hashes"], held["hashes"])
        if hash_difference:
            found.append(hash_difference)
    return found


def _index_content_differences(index: str, expected_state: dict, actual_state: dict) -> list[str]:
    """Projects, versions and release files of one index."""
    wanted, held = expected_state["projects"][index], actual_state["projects"].get(index, {})
    found = [f"{index}: project {name} is missing" for name in sorted(set(wanted) - set(held))]
    found += [
        f"{index}: project {name} is on the server but not in the export" for name in sorted(set(held) - set(wanted))
    ]
    for project in sorted(set(wanted) & set(held)):
        missing = sorted(set(wanted[project]) - set(held[project]))
        added = sorted(set(held[project]) - set(wanted[project]))
        found += [f"{index}: {project} {version} is missing" for version in missing]
        found += [f"{index}: {project} {version} is on the server but not in the export" for version in added]
    files_wanted, files_held = expected_state["files"].get(index, {}), actual_state["files"].get(index, {})
    for project in sorted(set(files_wanted) | set(files_held)):
        if project in wanted and project not in held:
            continue  # named above, with all its files
        found += _file_differences(index, files_wanted.get(project, {}), files_held.get(project, {}))
    return found


def differences(expected_state: dict, actual_state: dict) -> list[str]:
    """Every way the server's state differs from the export's, one sentence each; [] when none."""
    found = _named_differences("user", expected_state["users"], actual_state["users"])
    found += _named_differences("index", expected_state["indexes"], actual_state["indexes"])
    for index in sorted(expected_state["projects"]):
        if index in actual_state["indexes"] and not _is_mirror(actual_state["indexes"][index]):
            found += _index_content_differences(index, expected_state, actual_state)
    return found


def brief_differences(before: dict, after: dict) -> list[str]:
    """An in-place upgrade's check, as long whatever the number of release files: ``before`` (read once
    writes stopped) and ``after`` (the new version started) are ``{"serial", "uuid", "root"}``, ``root``
    being GET /'s result; the same serial and uuid, the same users and indexes with their settings."""
    found = [
        f"{key} is {after.get(key)!r}, {before.get(key)!r} at the stop"
        for key in ("uuid", "serial")
        if before.get(key) != after.get(key)
    ]
    was, now = actual(before["root"], {}, {}), actual(after["root"], {}, {})
    found += _named_differences("user", was["users"], now["users"])
    return found + _named_differences("index", was["indexes"], now["indexes"])


def counts(state: dict) -> dict[str, int]:
    """Users, indexes, projects and release files of a state."""
    return {
        "users": len(state["users"]),
        "indexes": len(state["indexes"]),
        "projects": sum(len(projects) for projects in state["projects"].values()),
        "files": sum(len(files) for by in state["files"].values() for files in by.values()),
    }


def summary(found: list[str], limit: int = SHOWN_DIFFERENCES) -> str:
    """The differences as one message, the first ``limit`` of them named."""
    shown = "; ".join(found[:limit])
    return shown + (f"; and {len(found) - limit} more" if len(found) > limit else "")


FSCK_ERROR = re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL)\s+(?:\[[^\]]*\]|NOCTX)\s+(?P<message>.*)$")
FSCK_EXCEPTION = re.compile(r"^(?:\w+Error|fatal): .*$")  # the storage it could not open, its last word


def fsck_errors(output: str) -> list[str]:
    """What devpi-fsck said went wrong (a missing file, a checksum mismatch, storage it could not open), without
    timestamps."""
    found = []
    for line in (line.strip() for line in output.splitlines()):
        if match := FSCK_ERROR.match(line):
            found.append(match.group("message"))
        elif FSCK_EXCEPTION.match(line):
            found.append(line)
    return found

"""The formula's pillar rules: defaults.yaml with pillar ``sentry`` laid over it, checked.

``checked`` fails on the first bad value with the key's full name (``PillarError``),
before any state runs: a key defaults.yaml does not know, a value of another type
than its default, and the values that would only fail later, half-applied (ports,
URLs, paths, sizes, schedules, what goes together and what excludes each other).
What derives from the settings is ``_utils/sentry_derived.py``'s; the module
``sentry_pillar`` joins the two for map.jinja.

Pure functions of their arguments (the module passes the minion's grains and
files in), so the unit tier checks every rule.
Reached as ``__utils__["sentry_pillar.checked"]``.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping

import salt.utils.dictupdate
import salt.utils.network

PREFIX = "sentry pillar: "
INDEX_KEYS = (
    "type",
    "bases",
    "volatile",
    "acl_upload",
    "mirror_whitelist",
    "mirror_url",
    "mirror_cache_expiry",
    "mirror_use_external_urls",
    "mirror_no_project_list",
)
MIRROR_INDEX_KEYS = ("mirror_url", "mirror_cache_expiry", "mirror_use_external_urls", "mirror_no_project_list")
CRON_SCHEDULE = re.compile(
    r"^(@(hourly|daily|weekly|monthly|yearly|annually|midnight)|[0-9A-Za-z*,/-]+( [0-9A-Za-z*,/-]+){4})$"
)
FRONT_NODE = re.compile(r"^([^\s/:\[\]]+|\[[0-9A-Fa-f:.]+\]):[0-9]+$")


class PillarError(ValueError):
    """A pillar value the formula refuses; the message names the key."""

    def __init__(self, message: str) -> None:
        super().__init__(PREFIX + message)


def show(value) -> str:
    """A value as the error message shows it (JSON, as in the pillar)."""
    return json.dumps(value, default=str)


def kind(value) -> str:
    """The YAML kind of a value, as messages name it."""
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Number):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, Iterable):
        return "list"
    return "unknown"


def whole(value) -> bool:
    """An integer, not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_types(value, default, path: str) -> None:
    """``value`` has its default's kind (a null default takes anything); a mapping knows only its default's keys
    (an empty default mapping takes any keys: users, indexes, CA certificates)."""
    want, got = kind(default), kind(value)
    if want not in (got, "null"):
        raise PillarError(f"{path} must be a {want}, got {got} {show(value)}")
    if want == "mapping" and default:
        for key in value:
            if key not in default:
                known = ", ".join(sorted(default))
                raise PillarError(f"unknown key {path}:{key} (known: {known})")
            check_types(value[key], default[key], f"{path}:{key}")


def dictsorted(mapping: Mapping) -> list:
    """Items by key, case aside (as Jinja's dictsort lists them)."""
    return sorted(mapping.items(), key=lambda item: str(item[0]).lower())


def is_url(value) -> bool:
    return isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None


def check_url(key: str, value, allow_empty: bool = False) -> None:
    if allow_empty and value == "":
        return
    if not is_url(value):
        raise PillarError(f"{key} must be an http(s) URL{' or ' + repr('') if allow_empty else ''}, got {show(value)}")


def check_size(key: str, value) -> None:
    if not isinstance(value, str) or re.match(r"^[1-9][0-9]*[kKmMgG]?$", value) is None:
        raise PillarError(
            f"{key} must be a size in nginx's syntax (a number, or with k, m or g: 128M, 1g), got {show(value)}"
        )


def check_addresses(key: str, addresses: list) -> None:
    for address in addresses:
        if not isinstance(address, str) or not salt.utils.network.is_ip_filter(address):
            raise PillarError(
                f"{key}: each is an IP address or network, e.g. 10.0.0.12 or 10.0.1.0/24, got {show(address)}"
            )


def check_tls(key: str, tls: dict) -> None:
    """A TLS listener's settings (sentry:nginx:tls, sentry:front:tls)."""
    if tls["enabled"] and not (tls["cert"] and tls["key"]):
        raise PillarError(f"{key}:enabled needs {key}:cert and {key}:key")
    if not whole(tls["hsts_seconds"]) or tls["hsts_seconds"] < 0:
        raise PillarError(f"{key}:hsts_seconds must be whole seconds, 0 or more, got {show(tls['hsts_seconds'])}")


# --- the rules, by part of the pillar ----------------------------------------------------------------------------


def check_package(package: dict, file_exists: Callable[[str], bool]) -> None:
    if package["source"] not in ("repo", "deb", "apt_repo"):
        raise PillarError(f"sentry:package:source must be one of repo, deb, apt_repo, got {show(package['source'])}")
    deb = package["deb"]
    if package["source"] == "deb":
        if not deb:
            raise PillarError("sentry:package:deb must name a .deb path or URL when sentry:package:source is deb")
        if deb.startswith("/") and not file_exists(deb):
            raise PillarError(f"sentry:package:deb: no such file {deb}")
        if not deb.startswith(("/", "http://", "https://")):
            raise PillarError(f"sentry:package:deb must be an absolute path or an http(s) URL, got {show(deb)}")
    if package["source"] == "apt_repo" and not package["apt_repo"]["line"]:
        raise PillarError("sentry:package:apt_repo:line is required when sentry:package:source is apt_repo")


def check_ports(sentry: dict) -> None:
    for key, port in (
        ("sentry:server:port", sentry["server"]["port"]),
        ("sentry:nginx:port", sentry["nginx"]["port"]),
        ("sentry:nginx:tls:port", sentry["nginx"]["tls"]["port"]),
    ):
        if not whole(port) or not 1 <= port <= 65535:
            raise PillarError(f"{key} must be a port number 1-65535, got {show(port)}")


def restrict_modify_of(server: dict) -> list[str]:
    return (
        [principal.strip() for principal in server["restrict_modify"].split(",")] if server["restrict_modify"] else []
    )


def check_server(sentry: dict) -> None:
    server = sentry["server"]
    if server["master_url"] and not server["master_url"].startswith(("http://", "https://")):
        raise PillarError(f"sentry:server:master_url must be an http(s) URL, got {show(server['master_url'])}")
    if server["role"] not in ("standalone", "primary"):
        raise PillarError(
            "sentry:server:role must be standalone or primary (a replica is made by master_url), "
            f"got {show(server['role'])}"
        )
    if server["master_url"] and server["role"] == "primary":
        raise PillarError("sentry:server:role primary cannot go with sentry:server:master_url")
    if server["master_url"] and server["offline_mode"]:
        raise PillarError(
            "sentry:server:offline_mode cannot go with sentry:server:master_url: a replica must fetch from its master"
        )
    # Only nginx faces the network; the server answers it on loopback.
    if server["host"] != "localhost" and re.match(r"^127\.[0-9]+\.[0-9]+\.[0-9]+$", server["host"]) is None:
        raise PillarError(
            "sentry:server:host must be a loopback address (127.0.0.1, localhost): only nginx faces the network, "
            f"got {show(server['host'])}"
        )
    restrict_modify = restrict_modify_of(server)
    if any(re.match(r"^:?[^\s,:/]+$", principal) is None for principal in restrict_modify):
        raise PillarError(
            "sentry:server:restrict_modify is user names and :groups separated by commas, e.g. root,:admins, "
            f"got {show(server['restrict_modify'])}"
        )
    bootstrap = sentry["bootstrap"]
    if restrict_modify and "root" not in restrict_modify and (bootstrap["users"] or bootstrap["indexes"]):
        raise PillarError(
            "sentry:server:restrict_modify must include root for sentry:bootstrap (it makes users and indexes "
            f"as root), got {show(server['restrict_modify'])}"
        )


def check_server_limits(server: dict) -> None:
    """Paths, thread and connection counts, the key derivation's costs."""
    for key in ("serverdir", "secretfile", "logdir"):
        if not server[key].startswith("/"):
            raise PillarError(f"sentry:server:{key} must be an absolute path, got {show(server[key])}")
    for key in ("threads", "connection_limit"):
        if not whole(server[key]) or server[key] < 1:
            raise PillarError(f"sentry:server:{key} must be a whole number 1 or more, got {show(server[key])}")
    kdf = server["secret_kdf"]
    lanes = kdf["parallelism"] if whole(kdf["parallelism"]) else 1
    for key, least in (("memory_cost", 8 * lanes), ("time_cost", 1), ("parallelism", 1)):
        if not whole(kdf[key]) or kdf[key] < least:
            raise PillarError(
                f"sentry:server:secret_kdf:{key} must be a whole number {least} or more, got {show(kdf[key])}"
            )


def listen_addresses(nginx: dict, has_ipv6: bool) -> list[str]:
    """nginx's listen addresses; IPv6 ones only where the host has IPv6 (nginx would not start otherwise)."""
    check_addresses("sentry:nginx:replica_addresses", nginx["replica_addresses"])
    addresses = nginx["listen_addresses"]
    if isinstance(addresses, (str, Mapping)) or not addresses:
        raise PillarError(
            'sentry:nginx:listen_addresses must be a list of IP addresses, e.g. ["0.0.0.0", "::"], '
            f"got {show(addresses)}"
        )
    listen = []
    for address in addresses:
        if not isinstance(address, str) or not salt.utils.network.is_ip_filter(address) or "/" in address:
            raise PillarError(
                "sentry:nginx:listen_addresses: each is an IP address (0.0.0.0 is all IPv4, :: all IPv6), "
                f"got {show(address)}"
            )
        if ":" not in address:
            listen.append(address)
        elif has_ipv6:
            listen.append(f"[{address}]")
    if not listen:
        raise PillarError(
            f"sentry:nginx:listen_addresses: this host has no IPv6, and no IPv4 address is listed: {show(addresses)}"
        )
    return listen


def check_nginx(sentry: dict) -> None:
    nginx = sentry["nginx"]
    check_tls("sentry:nginx:tls", nginx["tls"])
    check_size("sentry:nginx:client_max_body_size", nginx["client_max_body_size"])
    cache = nginx["cache"]
    if not whole(cache["seconds"]) or cache["seconds"] < 1:
        raise PillarError(f"sentry:nginx:cache:seconds must be whole seconds, 1 or more, got {show(cache['seconds'])}")
    for index in cache["indexes"]:
        if not isinstance(index, str) or re.match(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", index) is None:
            raise PillarError(
                f"sentry:nginx:cache:indexes: each is an index name user/index, e.g. root/pypi, got {show(index)}"
            )
    if re.match(r"^/[^\s;{}]*$", cache["dir"]) is None:
        raise PillarError(f"sentry:nginx:cache:dir must be an absolute path without spaces, got {show(cache['dir'])}")
    check_size("sentry:nginx:cache:max_size", cache["max_size"])
    check_size("sentry:nginx:cache:keys_size", cache["keys_size"])
    check_limits(nginx["limits"])
    theme = sentry["theme"]
    if theme["enabled"] and not theme["dir"].startswith("/"):
        raise PillarError(f"sentry:theme:dir must be an absolute path, got {show(theme['dir'])}")


def check_limits(limits: dict) -> None:
    """nginx's limit_req settings: rates as nginx writes them, bursts, the addresses never limited."""
    for name in ("login", "logins_total", "credentials"):
        rate, burst = limits[f"{name}_rate"], limits[f"{name}_burst"]
        if not isinstance(rate, str) or re.match(r"^[1-9][0-9]*r/[sm]$", rate) is None:
            raise PillarError(
                f"sentry:nginx:limits:{name}_rate must be requests per second or minute, e.g. 10r/m or 5r/s, "
                f"got {show(rate)}"
            )
        if not whole(burst) or burst < 0:
            raise PillarError(f"sentry:nginx:limits:{name}_burst must be a whole number 0 or more, got {show(burst)}")
    check_addresses("sentry:nginx:limits:exempt", limits["exempt"])
    check_addresses("sentry:nginx:limits:trusted_proxies", limits["trusted_proxies"])


def check_mirror(mirror: dict, file_exists: Callable[[str], bool]) -> None:
    """Outgoing requests: upstreams of mirrors (and a replica's master)."""
    check_url("sentry:mirror:url", mirror["url"])
    check_url("sentry:mirror:https_proxy", mirror["https_proxy"], allow_empty=True)
    check_url("sentry:mirror:http_proxy", mirror["http_proxy"], allow_empty=True)
    if not whole(mirror["cache_expiry"]) or mirror["cache_expiry"] < 0:
        raise PillarError(
            f"sentry:mirror:cache_expiry must be whole seconds, 0 or more, got {show(mirror['cache_expiry'])}"
        )
    bundle = mirror["ca_bundle"]
    if bundle and not (bundle.startswith("/") and file_exists(bundle)):
        raise PillarError(
            f"sentry:mirror:ca_bundle must be the absolute path of a PEM file on the host, got {show(bundle)}"
        )
    for name, pem in dictsorted(mirror["ca_certificates"]):
        if not isinstance(name, str) or re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name) is None:
            raise PillarError(
                f"sentry:mirror:ca_certificates: a name must be letters, digits, '.', '_' and '-', got {show(name)}"
            )
        if (
            not isinstance(pem, str)
            or "-----BEGIN CERTIFICATE-----" not in pem
            or "-----END CERTIFICATE-----" not in pem
        ):
            raise PillarError(
                f"sentry:mirror:ca_certificates:{name} must be a PEM certificate (-----BEGIN CERTIFICATE----- ...), "
                f"got {show(pem)[:80]}"
            )


def check_operations(sentry: dict) -> None:
    """Upgrades, backups, the cron jobs that run them."""
    if sentry["upgrade"]["method"] not in ("auto", "export"):
        raise PillarError(
            "sentry:upgrade:method must be auto (in place when the database versions allow) or export, "
            f"got {show(sentry['upgrade']['method'])}"
        )
    # 0 would remove the newest too: what a rollback or a recovery may still need.
    keep = sentry["prune_backups"]["keep"]
    if not whole(keep) or keep < 1:
        raise PillarError(f"sentry:prune_backups:keep must be a whole number 1 or more, got {show(keep)}")
    backup = sentry["backup"]
    if not whole(backup["keep"]) or backup["keep"] < 1:
        raise PillarError(f"sentry:backup:keep must be a whole number 1 or more, got {show(backup['keep'])}")
    for key in ("schedule", "drill_schedule"):
        if backup[key] and CRON_SCHEDULE.match(backup[key]) is None:
            raise PillarError(
                f"sentry:backup:{key} must be a cron schedule (minute hour day month weekday, e.g. '15 2 * * *', "
                f"or @daily) or '', got {show(backup[key])}"
            )
    if not whole(backup["log_weeks"]) or backup["log_weeks"] < 1:
        raise PillarError(f"sentry:backup:log_weeks must be a whole number 1 or more, got {show(backup['log_weeks'])}")
    if backup["dir"] and (" " in backup["dir"] or not backup["dir"].startswith("/")):
        raise PillarError(f"sentry:backup:dir must be an absolute path without spaces, got {show(backup['dir'])}")
    cron = sentry["cron"]
    for key in ("dir", "salt_call"):
        if cron[key] and (" " in cron[key] or not (cron[key].startswith("/") or key == "salt_call")):
            on_path = " or a command on PATH" if key == "salt_call" else ""
            raise PillarError(
                f"sentry:cron:{key} must be an absolute path without spaces{on_path}, got {show(cron[key])}"
            )


def check_monitor(monitor: dict) -> None:
    health = monitor["health"]
    for key, value in dictsorted(health):
        if key == "no_record_level":
            continue
        if not isinstance(value, numbers.Number) or isinstance(value, bool) or value < 0:
            raise PillarError(f"sentry:monitor:health:{key} must be a number 0 or more, got {show(value)}")
    for check in ("no_contact", "behind", "events", "backup_age", "drill_age"):
        warn, fatal = health[f"{check}_warn"], health[f"{check}_fatal"]
        if warn > fatal:
            raise PillarError(f"sentry:monitor:health:{check}_warn ({warn}) must not exceed {check}_fatal ({fatal})")
    if not health["disk_free_fatal"] <= health["disk_free_warn"] <= 100:
        raise PillarError(
            "sentry:monitor:health: disk_free_fatal <= disk_free_warn <= 100 (percent free), "
            f"got {health['disk_free_fatal']} and {health['disk_free_warn']}"
        )
    if health["no_record_level"] not in ("ok", "warn", "fatal"):
        raise PillarError(
            f"sentry:monitor:health:no_record_level must be ok, warn or fatal, got {show(health['no_record_level'])}"
        )
    metrics_file = monitor["metrics_file"]
    if not (metrics_file.startswith("/") and metrics_file.endswith(".prom")):
        raise PillarError(
            "sentry:monitor:metrics_file must be an absolute path ending in .prom (node_exporter's textfile "
            f"collector reads only those), got {show(metrics_file)}"
        )
    rules_dir = monitor["rules_dir"]
    if rules_dir and (" " in rules_dir or not rules_dir.startswith("/")):
        raise PillarError(
            f"sentry:monitor:rules_dir must be an absolute path without spaces or '', got {show(rules_dir)}"
        )
    if not whole(monitor["beacon_interval"]) or monitor["beacon_interval"] < 1:
        raise PillarError(
            f"sentry:monitor:beacon_interval must be whole seconds, 1 or more, got {show(monitor['beacon_interval'])}"
        )


def check_users(users: dict) -> None:
    for name, user in dictsorted(users):
        if not isinstance(name, str) or not name or " " in name or "/" in name:
            raise PillarError(f"sentry:bootstrap:users: a user name has no spaces or slashes, got {show(name)}")
        if not isinstance(user, Mapping):
            raise PillarError(f"sentry:bootstrap:users:{name} must be a mapping (password, email)")
        for key in user:
            if key not in ("password", "email"):
                raise PillarError(f"unknown key sentry:bootstrap:users:{name}:{key} (known: email, password)")


def index_keys() -> tuple[str, ...]:
    """An index's settings the formula knows (bootstrap:indexes, sentry_admin.index_get/index_set)."""
    return INDEX_KEYS


def check_index(name, index) -> None:
    where = f"sentry:bootstrap:indexes:{name}"
    if not isinstance(name, str) or name.count("/") != 1 or name.startswith("/") or name.endswith("/") or " " in name:
        raise PillarError(f"sentry:bootstrap:indexes: an index is named user/index, got {show(name)}")
    if not isinstance(index, Mapping):
        raise PillarError(f"{where} must be a mapping ({', '.join(INDEX_KEYS)})")
    if index.get("type", "stage") not in ("stage", "mirror"):
        raise PillarError(f"{where}:type must be stage or mirror, got {show(index['type'])}")
    if index.get("type") == "mirror":
        check_url(f"{where}:mirror_url", index.get("mirror_url", ""))
        if "bases" in index:
            raise PillarError(f"{where}:bases: a mirror index has no bases")
    elif any(key in MIRROR_INDEX_KEYS for key in index):
        raise PillarError(f"{where}: mirror_* settings need type: mirror")
    if "mirror_cache_expiry" in index and (not whole(index["mirror_cache_expiry"]) or index["mirror_cache_expiry"] < 0):
        raise PillarError(
            f"{where}:mirror_cache_expiry must be whole seconds, got {show(index['mirror_cache_expiry'])}"
        )
    for key in ("volatile", "mirror_use_external_urls", "mirror_no_project_list"):
        if key in index and not isinstance(index[key], bool):
            raise PillarError(f"{where}:{key} must be true or false, got {show(index[key])}")
    bases = index.get("bases", [])
    if kind(bases) != "list" or any(not isinstance(base, str) for base in bases):
        raise PillarError(f"{where}:bases must be a list of index names (user/index), got {show(bases)}")
    for key in index:
        if key not in INDEX_KEYS:
            raise PillarError(f"unknown key {where}:{key} (known: {', '.join(sorted(INDEX_KEYS))})")


def check_front(front: dict) -> None:
    drained = front["drained"]
    nodes = ([front["master"]] if front["master"] else []) + front["replicas"]
    for node in nodes + [node for node in drained if node not in ("master", "replicas")]:
        if not isinstance(node, str) or FRONT_NODE.match(node) is None:
            raise PillarError(
                f"sentry:front: a node is host:port of its nginx, e.g. 10.0.0.2:80 or [fd00::2]:80, got {show(node)}"
            )
    for node in drained:
        if node not in [front["master"], "master", "replicas", *front["replicas"]]:
            raise PillarError(
                f"sentry:front:drained names {node}, which is neither sentry:front:master nor one of "
                "sentry:front:replicas (nor 'master' or 'replicas')"
            )


def check_front_tls(front: dict, file_exists: Callable[[str], bool]) -> None:
    nodes_tls = front["nodes_tls"]
    check_tls("sentry:front:tls", front["tls"])
    if nodes_tls["enabled"] and re.match(r"^[A-Za-z0-9.-]+$", nodes_tls["server_name"]) is None:
        raise PillarError(
            "sentry:front:nodes_tls:enabled needs sentry:front:nodes_tls:server_name, the name the nodes' "
            f"certificates carry, e.g. pypi.example.org, got {show(nodes_tls['server_name'])}"
        )
    ca_file = nodes_tls["ca_file"]
    if ca_file and not (ca_file.startswith("/") and file_exists(ca_file)):
        raise PillarError(
            f"sentry:front:nodes_tls:ca_file must be the absolute path of a PEM file on the host, got {show(ca_file)}"
        )


def check_ldap_search(ldap: dict, search: str) -> None:
    """sentry:auth:ldap:user_search or group_search: set in full, or not at all."""
    if not ldap[search]["base"]:
        return
    for key in ("filter", "attribute_name"):
        if not ldap[search][key]:
            raise PillarError(f"sentry:auth:ldap:{search}:{key} is required with sentry:auth:ldap:{search}:base")
    if ldap[search]["scope"] not in ("base-object", "single-level", "whole-subtree"):
        raise PillarError(
            f"sentry:auth:ldap:{search}:scope must be base-object, single-level or whole-subtree, "
            f"got {show(ldap[search]['scope'])}"
        )


def check_lockdown(auth: dict) -> None:
    seconds = auth["lockdown_cache_seconds"]
    if not whole(seconds) or seconds < 0:
        raise PillarError(f"sentry:auth:lockdown_cache_seconds must be whole seconds, 0 or more, got {show(seconds)}")
    failed = auth["failed_credentials"]
    if not whole(failed["limit"]) or failed["limit"] < 0:
        raise PillarError(
            f"sentry:auth:failed_credentials:limit must be a whole number, 0 or more, got {show(failed['limit'])}"
        )
    for key in ("window_seconds", "ban_seconds"):
        if not whole(failed[key]) or failed[key] < 1:
            raise PillarError(
                f"sentry:auth:failed_credentials:{key} must be whole seconds, 1 or more, got {show(failed[key])}"
            )


def check_ldap(ldap: dict) -> None:
    """What devpi-ldap would refuse at start-up, named by its pillar key."""
    for url in ldap["urls"]:
        if not isinstance(url, str) or not url.startswith(("ldap://", "ldaps://")):
            raise PillarError(f"sentry:auth:ldap:urls must list ldap:// or ldaps:// URLs, got {show(url)}")
    if not ldap["urls"]:
        return
    template, user_base = ldap["user_template"], ldap["user_search"]["base"]
    if template and user_base:
        raise PillarError(
            "sentry:auth:ldap:user_template and sentry:auth:ldap:user_search exclude each other: "
            "set user_template or user_search:base"
        )
    if not (template or user_base):
        raise PillarError(
            "sentry:auth:ldap:urls needs sentry:auth:ldap:user_template or sentry:auth:ldap:user_search:base"
        )
    if template and "{username}" not in template:
        raise PillarError(f"sentry:auth:ldap:user_template must hold {{username}}, got {show(template)}")
    for search in ("user_search", "group_search"):
        check_ldap_search(ldap, search)
    if user_base and "{username}" not in ldap["user_search"]["filter"]:
        raise PillarError(
            f"sentry:auth:ldap:user_search:filter must hold {{username}}, got {show(ldap['user_search']['filter'])}"
        )
    if bool(ldap["bind_dn"]) != bool(ldap["bind_password"]):
        raise PillarError(
            "sentry:auth:ldap:bind_dn and sentry:auth:ldap:bind_password go together: set both or neither"
        )


def checked(
    defaults: dict, pillar: dict, *, has_ipv6: bool = True, file_exists: Callable[[str], bool] = os.path.isfile
) -> dict:
    """``pillar`` (pillar ``sentry``) over ``defaults`` (defaults.yaml's ``sentry``), checked; with
    ``derived: {listen: [...], restrict_modify: [...]}``: nginx's listen addresses for this host (IPv6 ones
    where it has IPv6), and server:restrict_modify as a list.

    Raises ``PillarError`` naming the first bad key.
    """
    check_types(pillar, defaults, "sentry")
    sentry = salt.utils.dictupdate.merge_recurse(defaults, pillar)
    check_package(sentry["package"], file_exists)
    check_ports(sentry)
    check_server(sentry)
    check_server_limits(sentry["server"])
    listen = listen_addresses(sentry["nginx"], has_ipv6)
    check_nginx(sentry)
    check_mirror(sentry["mirror"], file_exists)
    check_operations(sentry)
    check_monitor(sentry["monitor"])
    check_users(sentry["bootstrap"]["users"])
    for name, index in dictsorted(sentry["bootstrap"]["indexes"]):
        check_index(name, index)
    check_front(sentry["front"])
    check_front_tls(sentry["front"], file_exists)
    check_lockdown(sentry["auth"])
    check_ldap(sentry["auth"]["ldap"])
    # what the rules worked out and the derivation needs too (sentry_derived.derive)
    sentry["derived"] = {"listen": listen, "restrict_modify": restrict_modify_of(sentry["server"])}
    return sentry

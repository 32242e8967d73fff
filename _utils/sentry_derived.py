"""What derives from the formula's checked settings (``sentry_pillar.checked``): the values the sub-states and
templates must agree on, computed once (the server's arguments, its environment, file names, the TOFS search
path), and ``without_secrets``, the settings as templates get them.

Pure functions of their arguments; reached as ``__utils__["sentry_derived.derive"]`` and
``__utils__["sentry_derived.without_secrets"]`` (the module ``sentry_pillar`` joins them for map.jinja).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable

SIZE_UNITS = {"": 1, "k": 1024, "m": 1048576, "g": 1073741824}
TEMPLATES = (
    "supervisor-program.conf.jinja",
    "supervisor-in-sync.conf.jinja",
    "nginx-site.conf.jinja",
    "nginx-front.conf.jinja",
    "prometheus-rules.yml.jinja",
    "ldap.yaml.jinja",
    "ca-bundle.pem.jinja",
    "theme",
)


def size_in_bytes(size: str) -> int:
    """nginx's size (128M, 1g: checked before) in bytes, for the server's own limit."""
    unit = "" if size[-1:].isdigit() else size[-1:].lower()
    return int(size[:-1] if unit else size) * SIZE_UNITS[unit]


def environment_of(sentry: dict, ca_file: str) -> dict[str, str]:
    """The server's (and its watcher's) environment: CA file, proxies and what bypasses them, the count of failed
    credentials."""
    mirror, server = sentry["mirror"], sentry["server"]
    environment = {"HOME": sentry["user"]["home"], "LANG": "C.UTF-8"}
    if ca_file:
        environment.update({"SSL_CERT_FILE": ca_file, "REQUESTS_CA_BUNDLE": ca_file})
    if mirror["https_proxy"] or mirror["http_proxy"]:
        no_proxy = ["localhost", "127.0.0.1", "::1"]
        if server["master_url"]:
            netloc = server["master_url"].split("/")[2].rsplit("@", 1)[-1]
            no_proxy.append(netloc.split("]")[0] + "]" if netloc.startswith("[") else netloc.split(":")[0])
        no_proxy.extend(entry.strip() for entry in mirror["no_proxy"].split(",") if entry.strip())
        if mirror["https_proxy"]:
            environment["HTTPS_PROXY"] = mirror["https_proxy"]
        if mirror["http_proxy"]:
            environment["HTTP_PROXY"] = mirror["http_proxy"]
        environment["NO_PROXY"] = ",".join(dict.fromkeys(no_proxy))  # each once, first place kept
    failed = sentry["auth"]["failed_credentials"]
    if failed["limit"]:  # read by the deb's plugin (sentry_commands/failed_credentials.py)
        counted = (failed["limit"], failed["window_seconds"], failed["ban_seconds"])
        environment["SENTRY_FAILED_CREDENTIALS"] = "/".join(str(number) for number in counted)
    return environment


def supervisor_environment(environment: dict[str, str]) -> str:
    """supervisor's environment line: values quoted, %% for a literal %."""
    ordered = sorted(environment.items(), key=lambda item: item[0].lower())
    return ",".join(f'{key}="' + value.replace("%", "%%").replace('"', '\\"') + '"' for key, value in ordered)


def server_args(sentry: dict, restrict_modify: list[str], auth_args: list[str]) -> list[str]:
    """sentry-server's command line; devpi-server's own flags go after '--'."""
    server, kdf = sentry["server"], sentry["server"]["secret_kdf"]
    args = ["--serverdir", server["serverdir"], "--host", server["host"], "--port", str(server["port"])]
    args += ["--secretfile", server["secretfile"]]
    if server["master_url"]:
        args += ["--master-url", server["master_url"]]
    elif server["role"] == "primary":
        args += ["--role", "primary"]
    if server["outside_url"]:
        args += ["--outside-url", server["outside_url"]]
    if sentry["theme"]["enabled"]:
        args += ["--theme", sentry["theme"]["dir"]]
    if server["offline_mode"]:
        args.append("--offline-mode")
    devpi_args = ["--restrict-modify", ",".join(restrict_modify)] if restrict_modify else []
    devpi_args += ["--argon2-memory-cost", str(kdf["memory_cost"]), "--argon2-time-cost", str(kdf["time_cost"])]
    devpi_args += ["--argon2-parallelism", str(kdf["parallelism"])]
    devpi_args += ["--max-request-body-size", str(size_in_bytes(sentry["nginx"]["client_max_body_size"]))]
    # Flags at devpi's defaults are left out: --connection-limit is newer than some servers a fleet runs.
    for key, flag, devpi_default in (("threads", "--threads", 50), ("connection_limit", "--connection-limit", 100)):
        if server[key] != devpi_default:
            devpi_args += [flag, str(server[key])]
    devpi_args += auth_args + list(server["extra_args"])
    return [*args, "--", *devpi_args]


def retry_after(rate: str) -> int:
    """Seconds until a login limited at ``rate`` (10r/m, 2r/s) is let through again: 429's Retry-After."""
    count, per = rate[:-3], rate[-1]
    return max(1, -(-(60 if per == "m" else 1) // int(count)))


def derive(
    sentry: dict,
    *,
    tplroot: str,
    python_executable: str,
    conf_file: str,
    file_exists: Callable[[str], bool],
) -> dict:
    """The ``derived`` values of ``sentry`` (settings from ``sentry_pillar.checked``: its ``listen`` stays, its
    ``restrict_modify`` goes into the server's arguments)."""
    server, mirror, cron, backup, cache = (
        sentry["server"],
        sentry["mirror"],
        sentry["cron"],
        sentry["backup"],
        sentry["nginx"]["cache"],
    )
    program = server["program"]
    rules_dir = sentry["monitor"]["rules_dir"]
    # The CA file the server (and the modules reaching a master) trust: the bundle, with the named CAs a file
    # of the instance's own; '' leaves the host's store.
    bundle = f"/etc/sentry/{program}-ca.pem"
    ca = {
        "base": mirror["ca_bundle"] or "/etc/ssl/certs/ca-certificates.crt",
        "bundle": bundle,
        "file": bundle if mirror["ca_certificates"] else mirror["ca_bundle"],
    }
    environment = environment_of(sentry, ca["file"])
    ldap = sentry["auth"]["ldap"]
    # devpi-ldap reads its file at start-up, so a wrong one stops the server there with its message.
    auth = {"ldap_config": f"/etc/sentry/{program}-ldap.yaml"}
    auth_args = []
    if ldap["urls"]:
        auth_args = ["--ldap-config", auth["ldap_config"]] + (
            ["--autocreate-users"] if ldap["autocreate_users"] else []
        )
    # TOFS: each template is looked up in tofs:source_dir first, then in the formula.
    tofs_dirs = ([sentry["tofs"]["source_dir"]] if sentry["tofs"]["source_dir"] else []) + [
        f"salt://{tplroot}/files/default"
    ]
    sources = {name: [f"{folder}/{name}" for folder in tofs_dirs] for name in TEMPLATES}
    if sentry["theme"]["source"]:
        sources["theme"] = [sentry["theme"]["source"]]
    # Cron jobs run the salt-call beside the minion's own Python (a venv, onedir), else the one on cron's
    # PATH, with the minion's configuration directory. Job files are named after the program.
    beside_python = os.path.join(os.path.dirname(python_executable), "salt-call")
    conf_dir = os.path.dirname(conf_file)
    job_name = re.sub(r"[^A-Za-z0-9_-]", "_", program)
    cron_derived = {
        "salt_call": cron["salt_call"] or (beside_python if file_exists(beside_python) else "salt-call"),
        "conf_dir": conf_dir,
        "job_name": job_name,
    }
    # nginx's page cache: a site's (or the front's) own folder and zone; at most the mirror's expiry.
    # Under lockdown every answer is someone's: none is kept.
    page_seconds = min(cache["seconds"], mirror["cache_expiry"])
    page_cache = {
        "enabled": bool(cache["enabled"] and page_seconds > 0 and cache["indexes"] and not sentry["auth"]["lockdown"]),
        "seconds": page_seconds,
        "paths": "^/(" + "|".join(index.replace(".", "\\.") for index in cache["indexes"]) + ")/\\+simple/",
        "macros": f"{tplroot}/files/default/nginx-page-cache.jinja",
    }
    limits = sentry["nginx"]["limits"]
    restrict_modify = sentry["derived"]["restrict_modify"]
    return {
        "auth": auth,
        "ca": ca,
        "page_cache": page_cache,
        # Under lockdown: where nginx keeps passwords' successful checks, and its HMAC key (a site's own); ``name``
        # prefixes the site's nginx variables of it (the key file sets <name>_key).
        "auth_cache": {
            "enabled": bool(sentry["auth"]["lockdown"] and sentry["auth"]["lockdown_cache_seconds"] > 0),
            "name": re.sub(r"[^A-Za-z0-9_]", "_", sentry["nginx"]["site"]) + "_auth",
            "seconds": sentry["auth"]["lockdown_cache_seconds"],
            "dir": f"{cache['dir']}/{sentry['nginx']['site']}-auth",
            "key_file": f"/etc/nginx/{sentry['nginx']['site']}-auth-key.conf",
        },
        "headers": {"macros": f"{tplroot}/files/default/nginx-headers.jinja"},
        "limits": {
            "enabled": limits["enabled"],
            # Never limited: this host's own callers, the configured addresses; a node's site adds its replicas.
            "exempt": list(dict.fromkeys(["127.0.0.1", "::1", *limits["exempt"]])),
            "retry_after": retry_after(limits["login_rate"]),
            "macros": f"{tplroot}/files/default/nginx-limits.jinja",
        },
        # A replica's in-sync watcher: the flag its nginx checks before serving the front.
        "in_sync": {
            "program": f"{program}-in-sync",
            "script": "/usr/local/lib/sentry/sentry-in-sync.py",
            "conf_file": f"{sentry['supervisor']['confdir']}/{program}-in-sync.conf",
            "flag": f"{sentry['user']['home']}/{program}.in-sync",
        },
        "sources": sources,
        "server_url": f"http://{server['host']}:{server['port']}",
        "server_args": server_args(sentry, restrict_modify, auth_args),
        "listen": sentry["derived"]["listen"],
        "cron": cron_derived,
        "backup": {
            "dir": backup["dir"] or f"{sentry['user']['home']}/backups/{program}",
            "cron_file": f"{cron['dir']}/sentry-backup-{job_name}",
            "log": f"{server['logdir']}/{program}-backup.log",
            "logrotate_file": f"/etc/logrotate.d/sentry-backup-{job_name}",
        },
        # The health thresholds the modules read from the instance's settings; backups are expected where the
        # backup state is enabled.
        "health": {**sentry["monitor"]["health"], "backups_expected": backup["enabled"] is True},
        "monitor": {
            "cron_file": f"{cron['dir']}/sentry-monitor-{job_name}",
            "beacon_file": f"{conf_dir}/minion.d/sentry-beacon-{program}.conf",
            "rules_file": f"{rules_dir}/sentry-{program}.rules.yml" if rules_dir else "",
        },
        "environment": environment,
        "supervisor_environment": supervisor_environment(environment),
        # A proxy URL with a login makes the program file a secret: no diff of it in state output.
        "environment_has_secrets": any(
            re.match(r"^https?://([^/]*@)", proxy) for proxy in (mirror["https_proxy"], mirror["http_proxy"]) if proxy
        ),
        "default_site_aside": f"{sentry['nginx']['sites_enabled']}.sentry-disabled",
        "tplroot": tplroot,  # for templates that read the settings themselves (sentry_pillar.settings)
    }


def masked_url(url: str) -> str:
    """``url`` with its login (``user:password@``) replaced by ``****@``: what a template may show."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1****@", url)


def without_secrets(sentry: dict) -> dict:
    """The settings templates get, as state output may show them: root's password, the replication secret,
    the LDAP bind password and the bootstrap users' passwords blanked, proxy logins masked. A template that
    needs a secret reads it itself, when the file is written (the supervisor programs' environment, the
    LDAP file's bind password)."""
    context = copy.deepcopy(sentry)
    context["server"].update({"root_password": "", "secret": ""})
    context["auth"]["ldap"]["bind_password"] = ""
    for user in context["bootstrap"]["users"].values():
        if isinstance(user, dict) and "password" in user:
            user["password"] = ""
    for key in ("https_proxy", "http_proxy"):
        context["mirror"][key] = masked_url(context["mirror"][key])
    derived = context.get("derived")
    if derived:
        environment = derived["environment"]
        for key in ("HTTPS_PROXY", "HTTP_PROXY"):
            if key in environment:
                environment[key] = masked_url(environment[key])
        derived["supervisor_environment"] = supervisor_environment(environment)
    return context

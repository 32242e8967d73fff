"""The formula's pillar rules (``_utils/sentry_pillar.py``) and what derives from the settings
(``_utils/sentry_derived.py``), map.jinja's source: defaults.yaml under a pillar, every refusal naming its
key. No Salt run: test_formula_package and test_bad_input render them in hosts."""

from __future__ import annotations

import copy

import pytest
import yaml
from support.loading import REPO, load

rules = load("_utils/sentry_pillar.py", "sentry_pillar_unit")
derived = load("_utils/sentry_derived.py", "sentry_derived_unit")
DEFAULTS = yaml.safe_load((REPO / "sentry" / "defaults.yaml").read_text())["sentry"]
EXISTING = {"/srv/sentry.deb", "/opt/salt/bin/salt-call"}


def settings(pillar: dict, has_ipv6: bool = True, **kwargs) -> dict:
    """As the module sentry_pillar makes them: checked, then derived."""
    sentry = rules.checked(copy.deepcopy(DEFAULTS), pillar, has_ipv6=has_ipv6, file_exists=EXISTING.__contains__)
    sentry["derived"] = derived.derive(
        sentry,
        **{"tplroot": "sentry", "python_executable": "/nonexistent/python", "conf_file": "/etc/salt/minion"} | kwargs,
        file_exists=EXISTING.__contains__,
    )
    return sentry


@pytest.mark.parametrize(
    ("pillar", "message"),
    [
        ({"pakage": {}}, "unknown key sentry:pakage (known: auth, backup,"),
        ({"package": "sentry"}, "sentry:package must be a mapping, got string"),
        ({"server": {"port": "3141"}}, 'sentry:server:port must be a number, got string "3141"'),
        ({"server": {"port": True}}, "sentry:server:port must be a number, got boolean true"),
        ({"server": {"extra_args": "--debug"}}, "sentry:server:extra_args must be a list, got string"),
        ({"package": {"source": "ftp"}}, "sentry:package:source must be one of repo, deb, apt_repo"),
        ({"package": {"source": "deb", "deb": "/nonexistent/sentry.deb"}}, "no such file /nonexistent/sentry.deb"),
        ({"package": {"source": "deb", "deb": "sentry.deb"}}, "must be an absolute path or an http(s) URL"),
        ({"package": {"source": "apt_repo"}}, "sentry:package:apt_repo:line is required"),
        ({"nginx": {"port": 0}}, "sentry:nginx:port must be a port number 1-65535, got 0"),
        ({"server": {"master_url": "http://m:3141", "offline_mode": True}}, "offline_mode cannot go with"),
        ({"server": {"master_url": "http://m:3141", "role": "primary"}}, "role primary cannot go with"),
        ({"server": {"host": "0.0.0.0"}}, "sentry:server:host must be a loopback address"),  # noqa: S104
        ({"server": {"restrict_modify": "root alice"}}, "sentry:server:restrict_modify is user names"),
        ({"server": {"restrict_modify": "alice"}, "bootstrap": {"users": {"bob": {}}}}, "must include root"),
        ({"server": {"threads": 0}}, "sentry:server:threads must be a whole number 1 or more, got 0"),
        ({"server": {"secret_kdf": {"memory_cost": 16}}}, "secret_kdf:memory_cost must be a whole number 32 or more"),
        ({"nginx": {"replica_addresses": ["10.0.0.0/33"]}}, "sentry:nginx:replica_addresses: each is an IP"),
        ({"nginx": {"listen_addresses": ["10.0.0.0/8"]}}, "sentry:nginx:listen_addresses: each is an IP address"),
        ({"nginx": {"tls": {"enabled": True}}}, "sentry:nginx:tls:enabled needs sentry:nginx:tls:cert"),
        ({"nginx": {"tls": {"hsts_seconds": 1.5}}}, "sentry:nginx:tls:hsts_seconds must be whole seconds"),
        ({"nginx": {"client_max_body_size": "12x"}}, "sentry:nginx:client_max_body_size must be a size"),
        ({"nginx": {"cache": {"indexes": ["pypi"]}}}, "sentry:nginx:cache:indexes: each is an index name"),
        ({"nginx": {"limits": {"login_rate": "10/m"}}}, "sentry:nginx:limits:login_rate must be requests per"),
        ({"nginx": {"limits": {"credentials_rate": "0r/s"}}}, "sentry:nginx:limits:credentials_rate must be"),
        ({"nginx": {"limits": {"logins_total_burst": -1}}}, "sentry:nginx:limits:logins_total_burst must be a whole"),
        ({"nginx": {"limits": {"exempt": ["ci-runners"]}}}, "sentry:nginx:limits:exempt: each is an IP address"),
        ({"nginx": {"limits": {"trusted_proxies": "10.0.0.1"}}}, "sentry:nginx:limits:trusted_proxies must be a list"),
        ({"auth": {"lockdown_cache_seconds": -5}}, "sentry:auth:lockdown_cache_seconds must be whole seconds"),
        ({"auth": {"failed_credentials": {"limit": -1}}}, "sentry:auth:failed_credentials:limit must be a whole"),
        ({"auth": {"failed_credentials": {"limit": "30"}}}, "sentry:auth:failed_credentials:limit must be a number"),
        (
            {"auth": {"failed_credentials": {"window_seconds": 0}}},
            "sentry:auth:failed_credentials:window_seconds must be whole seconds, 1 or more",
        ),
        (
            {"auth": {"failed_credentials": {"ban_seconds": 1.5}}},
            "sentry:auth:failed_credentials:ban_seconds must be whole seconds",
        ),
        (
            {"front": {"tls": {"enabled": True, "cert": "/c.pem"}}},
            "sentry:front:tls:enabled needs sentry:front:tls:cert",
        ),
        ({"front": {"tls": {"hsts_seconds": -1}}}, "sentry:front:tls:hsts_seconds must be whole seconds"),
        (
            {"front": {"nodes_tls": {"enabled": True}}},
            "sentry:front:nodes_tls:enabled needs sentry:front:nodes_tls:server",
        ),
        (
            {"front": {"nodes_tls": {"ca_file": "/nonexistent.pem"}}},
            "sentry:front:nodes_tls:ca_file must be the absolute",
        ),
        ({"mirror": {"https_proxy": "proxy:3128"}}, "sentry:mirror:https_proxy must be an http(s) URL or ''"),
        ({"mirror": {"ca_bundle": "/nonexistent"}}, "sentry:mirror:ca_bundle must be the absolute path of a PEM"),
        ({"mirror": {"ca_certificates": {"corp": "x"}}}, "sentry:mirror:ca_certificates:corp must be a PEM"),
        ({"upgrade": {"method": "inplace"}}, "sentry:upgrade:method must be auto"),
        ({"prune_backups": {"keep": 0}}, "sentry:prune_backups:keep must be a whole number 1 or more, got 0"),
        ({"backup": {"schedule": "daily"}}, "sentry:backup:schedule must be a cron schedule"),
        ({"cron": {"salt_call": "salt call"}}, "sentry:cron:salt_call must be an absolute path without spaces or a"),
        ({"monitor": {"health": {"behind_warn": 5000}}}, "behind_warn (5000) must not exceed behind_fatal (3600)"),
        ({"monitor": {"metrics_file": "/x.txt"}}, "sentry:monitor:metrics_file must be an absolute path ending in"),
        ({"bootstrap": {"users": {"a": {"pw": 1}}}}, "unknown key sentry:bootstrap:users:a:pw"),
        ({"bootstrap": {"indexes": {"ab": {}}}}, 'an index is named user/index, got "ab"'),
        ({"bootstrap": {"indexes": {"a/b": {"type": "mirror"}}}}, "sentry:bootstrap:indexes:a/b:mirror_url must"),
        ({"bootstrap": {"indexes": {"a/b": {"mirror_url": "https://x"}}}}, "mirror_* settings need type: mirror"),
        ({"bootstrap": {"indexes": {"a/b": {"bases": "root/pypi"}}}}, "a/b:bases must be a list of index names"),
        ({"front": {"replicas": ["a:1"], "drained": ["b:2"]}}, "sentry:front:drained names b:2"),
        ({"auth": {"ldap": {"urls": ["ldap://x"]}}}, "needs sentry:auth:ldap:user_template or"),
        ({"auth": {"ldap": {"urls": ["ldap://x"], "user_template": "{username}", "bind_dn": "x"}}}, "go together"),
    ],
)
def test_a_bad_pillar_is_refused_naming_its_key(pillar, message):
    with pytest.raises(rules.PillarError) as refused:
        settings(pillar)
    assert str(refused.value).startswith("sentry pillar: ")
    assert message in str(refused.value)


# The rest of the rules, one case each (with the cases above, every rule of _utils/sentry_pillar.py).
EVERY_RULE = [
    ({"mirror": {"url": "ftp://x"}}, 'sentry:mirror:url must be an http(s) URL, got "ftp://x"'),
    ({"nginx": {"cache": {"max_size": "1 g"}}}, "sentry:nginx:cache:max_size must be a size in nginx's syntax"),
    ({"package": {"source": "deb"}}, "sentry:package:deb must name a .deb path or URL when sentry:package:source"),
    ({"package": {"source": "deb", "deb": "/srv/sentry.deb"}}, None),  # exists (EXISTING): accepted
    ({"server": {"master_url": "master:3141"}}, 'sentry:server:master_url must be an http(s) URL, got "master:3141"'),
    ({"server": {"role": "replica"}}, "sentry:server:role must be standalone or primary"),
    ({"server": {"serverdir": "data"}}, 'sentry:server:serverdir must be an absolute path, got "data"'),
    ({"server": {"secret_kdf": {"time_cost": 0}}}, "sentry:server:secret_kdf:time_cost must be a whole number 1"),
    ({"server": {"secret_kdf": {"parallelism": 0}}}, "sentry:server:secret_kdf:parallelism must be a whole number 1"),
    ({"nginx": {"cache": {"seconds": 0}}}, "sentry:nginx:cache:seconds must be whole seconds, 1 or more, got 0"),
    ({"nginx": {"cache": {"dir": "/var/cache/my nginx"}}}, "sentry:nginx:cache:dir must be an absolute path without"),
    ({"theme": {"dir": "theme"}}, 'sentry:theme:dir must be an absolute path, got "theme"'),
    ({"mirror": {"cache_expiry": -1}}, "sentry:mirror:cache_expiry must be whole seconds, 0 or more, got -1"),
    ({"mirror": {"ca_certificates": {"-corp": "x"}}}, "sentry:mirror:ca_certificates: a name must be letters"),
    ({"backup": {"keep": 0}}, "sentry:backup:keep must be a whole number 1 or more, got 0"),
    ({"backup": {"drill_schedule": "weekly"}}, "sentry:backup:drill_schedule must be a cron schedule"),
    ({"backup": {"schedule": "@daily", "drill_schedule": ""}}, None),
    ({"backup": {"log_weeks": 0}}, "sentry:backup:log_weeks must be a whole number 1 or more, got 0"),
    ({"backup": {"dir": "backups"}}, 'sentry:backup:dir must be an absolute path without spaces, got "backups"'),
    ({"cron": {"dir": "cron.d"}}, 'sentry:cron:dir must be an absolute path without spaces, got "cron.d"'),
    ({"monitor": {"health": {"behind_warn": -1}}}, "sentry:monitor:health:behind_warn must be a number 0 or more"),
    ({"monitor": {"health": {"disk_free_fatal": 20}}}, "disk_free_fatal <= disk_free_warn <= 100 (percent free)"),
    ({"monitor": {"health": {"no_record_level": "page"}}}, "sentry:monitor:health:no_record_level must be ok, warn"),
    ({"monitor": {"rules_dir": "rules"}}, 'sentry:monitor:rules_dir must be an absolute path without spaces or'),
    ({"monitor": {"beacon_interval": 0}}, "sentry:monitor:beacon_interval must be whole seconds, 1 or more, got 0"),
    ({"bootstrap": {"users": {"bob": "pw"}}}, "sentry:bootstrap:users:bob must be a mapping (password, email)"),
    ({"bootstrap": {"indexes": {"a/b": ["root/pypi"]}}}, "sentry:bootstrap:indexes:a/b must be a mapping (type,"),
    ({"bootstrap": {"indexes": {"a/b": {"type": "volatile"}}}}, 'a/b:type must be stage or mirror, got "volatile"'),
    ({"bootstrap": {"indexes": {"a/m": {"type": "mirror", "mirror_url": "https://m/", "bases": []}}}}, "a mirror"),
    ({"bootstrap": {"indexes": {"a/m": {"type": "mirror", "mirror_url": "https://m/", "mirror_cache_expiry": "1"}}}},
     'a/m:mirror_cache_expiry must be whole seconds, got "1"'),
    ({"bootstrap": {"indexes": {"a/b": {"volatile": "no"}}}}, 'a/b:volatile must be true or false, got "no"'),
    ({"bootstrap": {"indexes": {"a/b": {"base": []}}}}, "unknown key sentry:bootstrap:indexes:a/b:base (known:"),
    ({"front": {"master": "10.0.0.2"}}, 'sentry:front: a node is host:port of its nginx'),
    ({"auth": {"ldap": {"urls": ["http://ldap"]}}}, 'sentry:auth:ldap:urls must list ldap:// or ldaps:// URLs'),
    ({"auth": {"ldap": {"urls": ["ldap://d"], "user_search": {"base": "dc=x"}}}},
     "sentry:auth:ldap:user_search:filter is required with sentry:auth:ldap:user_search:base"),
    ({"auth": {"ldap": {"urls": ["ldap://d"], "user_search": {"base": "dc=x", "filter": "(uid={username})",
                                                              "scope": "tree"}}}},
     "sentry:auth:ldap:user_search:scope must be base-object, single-level or whole-subtree"),
    ({"auth": {"ldap": {"urls": ["ldap://d"], "user_search": {"base": "dc=x", "filter": "(uid=x)"}}}},
     "sentry:auth:ldap:user_search:filter must hold {username}"),
    ({"auth": {"ldap": {"urls": ["ldap://d"], "user_template": "x"}}}, "sentry:auth:ldap:user_template must hold"),
]  # fmt: skip


@pytest.mark.parametrize(("pillar", "message"), EVERY_RULE)
def test_every_rule_refuses_naming_its_key_and_lets_good_values_through(pillar, message):
    if message is None:
        assert settings(pillar)["derived"]["server_url"]
        return
    with pytest.raises(rules.PillarError) as refused:
        settings(pillar)
    assert message in str(refused.value)


def test_defaults_alone_derive_the_server_and_its_files():
    got = settings({}, python_executable="/opt/salt/bin/python3", conf_file="/etc/salt/minion")
    derived = got["derived"]
    assert derived["server_args"] == [
        "--serverdir", "/var/lib/sentry/data", "--host", "127.0.0.1", "--port", "3141",
        "--secretfile", "/var/lib/sentry/.secret", "--theme", "/etc/sentry/theme",
        "--", "--restrict-modify", "root", "--argon2-memory-cost", "65536", "--argon2-time-cost", "3",
        "--argon2-parallelism", "4", "--max-request-body-size", "134217728",
    ]  # fmt: skip
    assert derived["listen"] == ["0.0.0.0", "[::]"]  # noqa: S104
    assert derived["cron"] == {
        "salt_call": "/opt/salt/bin/salt-call",
        "conf_dir": "/etc/salt",
        "job_name": "sentry-server",
    }
    assert derived["sources"]["nginx-site.conf.jinja"] == ["salt://sentry/files/default/nginx-site.conf.jinja"]
    assert derived["page_cache"]["enabled"] and derived["page_cache"]["paths"] == "^/(root/pypi)/\\+simple/"
    assert derived["environment"] == {
        "HOME": "/var/lib/sentry",
        "LANG": "C.UTF-8",
        "SENTRY_FAILED_CREDENTIALS": "30/600/600",  # limit/window/ban, for the deb's plugin
    }


def test_no_ipv6_listens_on_ipv4_alone_and_refuses_ipv6_only():
    assert settings({}, has_ipv6=False)["derived"]["listen"] == ["0.0.0.0"]  # noqa: S104
    with pytest.raises(rules.PillarError, match="this host has no IPv6"):
        settings({"nginx": {"listen_addresses": ["::"]}}, has_ipv6=False)


def test_a_replica_behind_a_proxy_bypasses_it_for_its_master_and_hides_the_login():
    got = settings(
        {
            "server": {"master_url": "http://u:p@[fd00::1]:8080/", "threads": 8},
            "mirror": {"https_proxy": "http://a:b%@proxy:3128", "no_proxy": " .corp, localhost "},
            "nginx": {"cache": {"indexes": ["root/py.pi"]}},
            "auth": {"lockdown": True},
        }
    )["derived"]
    assert got["environment"]["NO_PROXY"] == "localhost,127.0.0.1,::1,[fd00::1],.corp"
    assert 'HTTPS_PROXY="http://a:b%%@proxy:3128"' in got["supervisor_environment"]
    assert got["environment_has_secrets"] is True
    assert got["server_args"][8:10] == ["--master-url", "http://u:p@[fd00::1]:8080/"]
    assert got["server_args"][-2:] == ["--threads", "8"]
    assert got["page_cache"]["enabled"] is False  # under lockdown nothing is cached
    assert got["page_cache"]["paths"] == "^/(root/py\\.pi)/\\+simple/"


def test_templates_get_no_secret():
    got = settings(
        {
            "server": {"root_password": "rootpw", "secret": "s3cret"},
            "auth": {"ldap": {"bind_password": "bindpw"}},
            "bootstrap": {"users": {"alice": {"password": "alicepw", "email": "a@example.org"}}},
            "mirror": {"https_proxy": "http://ci:proxypw@proxy:3128", "http_proxy": "http://proxy:3128"},
        }
    )
    blanked = derived.without_secrets(got)
    assert (blanked["server"]["root_password"], blanked["server"]["secret"]) == ("", "")
    assert blanked["auth"]["ldap"]["bind_password"] == ""
    assert blanked["bootstrap"]["users"]["alice"] == {"password": "", "email": "a@example.org"}
    assert blanked["mirror"]["https_proxy"] == "http://****@proxy:3128"
    assert blanked["mirror"]["http_proxy"] == "http://proxy:3128"
    assert blanked["derived"]["environment"]["HTTPS_PROXY"] == "http://****@proxy:3128"
    for secret in ("rootpw", "s3cret", "bindpw", "alicepw", "proxypw"):
        assert secret not in repr(blanked), secret
    # the settings themselves keep them: the states read them from pillar, a template when it writes its file
    assert got["server"]["root_password"] == "rootpw"
    assert 'HTTPS_PROXY="http://ci:proxypw@proxy:3128"' in got["derived"]["supervisor_environment"]

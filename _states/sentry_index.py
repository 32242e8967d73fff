"""Indexes of a sentry server, declared.

.. code-block:: yaml

    sentry-index-alice/dev:
      sentry_index.present:
        - name: alice/dev
        - bases: [root/pypi]
        - volatile: false
        - acl_upload: [alice]

Changes are made as root, with the password the state reads from pillar
(``root_password_pillar``); a dry run checks that root can log in with it.
"""

from __future__ import annotations

from salt.exceptions import CommandExecutionError

__virtualname__ = "sentry_index"

ROOT_PILLAR = "sentry:server:root_password"  # where root's password is read from


def __virtual__():
    return __virtualname__


def _failed(ret: dict, exc: Exception, url: str | None) -> dict:
    return __utils__["sentry_state.failed"](ret, exc, __opts__["test"], __context__, url)


def _root_password(pillar_key: str) -> str | None:
    return __utils__["sentry_state.pillar_secret"](__pillar__, pillar_key)


def present(
    name: str,
    bases: list[str] | None = None,
    volatile: bool | None = None,
    acl_upload: list[str] | None = None,
    mirror_whitelist: list[str] | None = None,
    url: str | None = None,
    type: str | None = None,
    mirror_url: str | None = None,
    mirror_cache_expiry: int | None = None,
    mirror_use_external_urls: bool | None = None,
    mirror_no_project_list: bool | None = None,
    root_password_pillar: str = ROOT_PILLAR,
) -> dict:
    """
    Ensure the index ``name`` (``user/index``) exists with these settings; unset ones are left alone.

    ``type`` (stage or mirror) is used when the index is made; an existing
    index of another type fails the state. Mirrors take the ``mirror_*`` settings.
    Changes are made as root, with the password found at ``root_password_pillar``.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": f"index {name} is as declared"}
    wanted = {
        key: value
        for key, value in (
            ("type", type),
            ("bases", bases),
            ("volatile", volatile),
            ("acl_upload", acl_upload),
            ("mirror_whitelist", mirror_whitelist),
            ("mirror_url", mirror_url),
            ("mirror_cache_expiry", mirror_cache_expiry),
            ("mirror_use_external_urls", mirror_use_external_urls),
            ("mirror_no_project_list", mirror_no_project_list),
        )
        if value is not None
    }
    try:
        current = __salt__["sentry_admin.index_get"](name, url=url)
        if current is None:
            ret["changes"] = {
                "index": {"old": None, "new": name},
                **{k: {"old": None, "new": v} for k, v in wanted.items()},
            }
        else:
            ret["changes"] = {k: {"old": current.get(k), "new": v} for k, v in wanted.items() if current.get(k) != v}
        if not ret["changes"]:
            return ret
        if __opts__["test"]:
            __utils__["sentry_state.check_root"](__pillar__, root_password_pillar, url, __context__)
            return {
                **ret,
                "result": None,
                "comment": f"index {name} would be {'created' if current is None else 'changed'}",
            }
        __salt__["sentry_admin.index_set"](name, url=url, root_password=_root_password(root_password_pillar), **wanted)
    except (CommandExecutionError, KeyError) as exc:
        return _failed(ret, exc, url)
    ret["comment"] = f"index {name} {'created' if current is None else 'changed'}"
    return ret


def bases_exist(name: str, indexes: dict[str, list[str]] | None = None, url: str | None = None) -> dict:
    """
    Check that every base of ``indexes`` (``{"user/index": [base, ...]}``) exists
    on the server; changes nothing. sentry.bootstrap runs it before any user or
    index is made, so that a missing base fails the bootstrap with the server
    left as it was.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": "every base index exists"}
    missing = []
    try:
        for index, bases in sorted((indexes or {}).items()):
            missing += [
                f"base index {base} of {index} does not exist"
                for base in bases
                if __salt__["sentry_admin.index_get"](base, url=url) is None
            ]
    except (CommandExecutionError, KeyError) as exc:
        return _failed(ret, exc, url)
    if missing:
        ret["result"] = False
        ret["comment"] = (
            "; ".join(missing) + ": neither on the server nor in sentry:bootstrap:indexes."
            " Nothing was changed; declare the base there or fix bases."
        )
    return ret


def absent(name: str, url: str | None = None, root_password_pillar: str = ROOT_PILLAR) -> dict:
    """
    Ensure the index ``name`` (``user/index``) does not exist (its files go with it).

    It is deleted as root, with the password found at ``root_password_pillar``.
    """
    root_password = _root_password(root_password_pillar)
    return __utils__["sentry_state.absent"](
        "index",
        name,
        lambda: __salt__["sentry_admin.index_get"](name, url=url),
        lambda: __salt__["sentry_admin.index_delete"](name, url=url, root_password=root_password),
        test=__opts__["test"],
        pillar=__pillar__,
        root_key=root_password_pillar,
        context=__context__,
        url=url,
    )

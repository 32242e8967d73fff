"""Run inside a test host: Salt's loader (pytest-salt-factories ``Loaders``) over the repository's modules.

Reads ``{"repo", "file_root", "pillar", "calls": [[kind, function, args, kwargs], ...]}`` as
JSON on stdin; ``kind`` is ``module``, ``state`` or ``missing`` (why the loader
left ``function`` out, or null when it is there). Prints one JSON list: per
call ``{"value": ...}`` (a module's return; a state's name, result, changes
and comment; the reason) or ``{"error": ...}`` (a CommandExecutionError's message).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import salt.config
import yaml
from salt.exceptions import CommandExecutionError
from saltfactories.utils.functional import Loaders


def make_loaders(repo: str, file_root: str, pillar: dict) -> Loaders:
    """``file_root``: what Salt serves (support.paths.formula_tree): the clone itself would be walked whole."""
    root = Path(tempfile.mkdtemp(prefix="sentry-loader-"))
    pillar_root = root / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["data"]}}))
    (pillar_root / "data.sls").write_text(yaml.safe_dump(pillar))
    opts = salt.config.minion_config(None)
    opts.update(
        {
            "root_dir": str(root),
            "cachedir": str(root / "cache"),
            "file_client": "local",
            "file_roots": {"base": [file_root]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "module_dirs": [f"{repo}/_modules"],
            "states_dirs": [f"{repo}/_states"],
            "utils_dirs": [f"{repo}/_utils"],
        }
    )
    loaders = Loaders(opts)
    loaders.opts["pillar"] = loaders.pillar
    loaders.reload_all()
    return loaders


def run(loaders: Loaders, kind: str, function: str, args: list, kwargs: dict) -> dict:
    try:
        if kind == "module":
            return {"value": loaders.modules[function](*args, **kwargs)}
        if kind == "missing":
            return {"value": None if function in loaders.modules else loaders.modules.missing_fun_string(function)}
        module, name = function.split(".")
        result = getattr(getattr(loaders.states, module), name)(*args, **kwargs)
        return {"value": {key: result.filtered.get(key) for key in ("name", "result", "changes", "comment")}}
    except CommandExecutionError as exc:
        return {"error": str(exc)}


def main() -> None:
    request = json.load(sys.stdin)
    loaders = make_loaders(request["repo"], request["file_root"], request["pillar"])
    print(json.dumps([run(loaders, *call) for call in request["calls"]]))


if __name__ == "__main__":
    main()

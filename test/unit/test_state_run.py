"""The suite's "a re-apply changes nothing" helpers refuse a failed run, whose ``{}`` would pass for it."""

from __future__ import annotations

import json
import subprocess

import pytest
from support.cluster import changed
from support.masterless import StateRun

KEY = "file_|-sentry-nginx-site-file_|-/etc/nginx/sites-available/sentry_|-managed"


def run(returncode: int, returned) -> StateRun:
    return StateRun(subprocess.CompletedProcess([], returncode, json.dumps({"local": returned}), ""))


def test_a_successful_run_lists_what_changed_and_nothing_else():
    quiet = {KEY: {"result": True, "changes": {}, "comment": "in place"}}
    assert run(0, quiet).changed == {}
    busy = {KEY: {"result": True, "changes": {"diff": "+listen 80;"}, "comment": "updated"}}
    assert run(0, busy).changed == {"sentry-nginx-site-file": {"diff": "+listen 80;"}}
    assert changed(quiet) == {}


def test_a_render_error_is_no_empty_change():
    broken = run(1, ["Rendering SLS 'base:sentry.map' failed: sentry:nginx:port: 'eighty' is not a port"])
    with pytest.raises(AssertionError, match="is not a port"):
        _ = broken.changed
    with pytest.raises(AssertionError, match="prove nothing"):
        changed(broken.returned)


def test_a_failing_state_without_changes_is_no_empty_change():
    states = {KEY: {"result": False, "changes": {}, "comment": "nginx -t refused the site"}}
    with pytest.raises(AssertionError, match="nginx -t refused"):
        _ = run(2, states).changed
    with pytest.raises(AssertionError, match="nginx -t refused"):
        changed(states)
    assert run(2, states).changes_of_failed_run == {}

"""pytest-salt-factories' configuration for this suite, as a fixture.

conftest offers it to every test; a pytest run that loads conftest as a plugin
(``-p conftest``, test_interrupt.py's inner run) imports it into its test
module as well, since a module's fixture outranks salt-factories' own default
and a plugin's does not.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """Salt-factories' own files (generated scripts) in pytest's temporary folders, not loose in /tmp."""
    return {"root_dir": tmp_path_factory.mktemp("salt-factories"), "slow_stop": False}

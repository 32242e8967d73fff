"""Entry points of the sentry package: ``sentry-server`` and ``sentry``."""

from importlib.metadata import PackageNotFoundError, version

from sentry_commands._build import PACKAGE_VERSION

__all__ = ["PACKAGE_VERSION", "component_versions"]

COMPONENTS = ("devpi-server", "devpi-web", "devpi-client")
PLUGINS = ("devpi-ldap", "devpi-lockdown", "devpi-tokens")  # packaging/plugins.txt; named when inside


def component_versions() -> dict[str, str]:
    """Versions of the devpi distributions inside this package, then of the plugins it carries."""
    found = {}
    for name in COMPONENTS + PLUGINS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            if name in COMPONENTS:
                found[name] = "missing"
    return found


def version_line(program: str) -> str:
    parts = ", ".join(f"{name} {ver}" for name, ver in component_versions().items())
    return f"{program} {PACKAGE_VERSION} ({parts})"

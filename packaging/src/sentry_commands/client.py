"""``sentry``: the sentry client, devpi-client under the package's name.

Everything devpi-client does works as documented for ``devpi``
(``sentry use URL``, ``sentry login``, ``sentry user -c``, ``sentry index -c``,
``sentry upload``).  Two additions keep passwords off the command line:

    sentry login USER --password-stdin       reads the password from stdin
    sentry user -c USER --password-stdin     likewise for a new user (or -m)

The password read is handed to devpi-client inside this process, so it shows
in no process list.
"""

from __future__ import annotations

import sys

from sentry_commands import version_line

STDIN_FLAG = "--password-stdin"


def read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise SystemExit("sentry: error: --password-stdin read an empty password")
    return password


def with_stdin_password(argv: list[str]) -> list[str]:
    """Replace --password-stdin by the form devpi-client expects for the command."""
    if STDIN_FLAG not in argv:
        return argv
    rest = [arg for arg in argv if arg != STDIN_FLAG]
    command = next((arg for arg in rest if not arg.startswith("-")), None)
    if command == "login":
        # One argument: a password starting with "-" (token_urlsafe makes them) is not taken for an option.
        return [*rest, f"--password={read_password()}"]
    if command == "user" and ("-c" in rest or "-m" in rest or "--create" in rest or "--modify" in rest):
        return [*rest, f"password={read_password()}"]
    raise SystemExit(f"sentry: error: {STDIN_FLAG} only goes with 'login' and 'user -c/-m'")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:
        print(version_line("sentry"))
        return 0
    from devpi.main import main as devpi_main

    return devpi_main(["sentry", *with_stdin_password(argv)]) or 0


if __name__ == "__main__":
    sys.exit(main())

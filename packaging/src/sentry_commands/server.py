"""``sentry-server``: the classic one-binary interface over devpi-server 6.

devpi-server 6 split its old flags into separate commands; this keeps the
interface operators know and maps each action onto the right one:

    sentry-server [--serverdir D] [--host H] [--port P] ...   devpi-server
    sentry-server --init [--root-passwd-file F]              devpi-init
    sentry-server --export DIR                               devpi-export
    sentry-server --import DIR                               devpi-import
    sentry-server --fsck                                     devpi-fsck
    sentry-server --gen-config                               devpi-gen-config
    sentry-server --version

Usage errors exit 2, failures of the action exit 1.  Secrets are never taken
from the command line: the root password comes from a file or stdin and is
handed to devpi-init inside this process.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from urllib.parse import urlsplit

from sentry_commands import version_line

DEFAULT_SERVERDIR = "/var/lib/sentry/data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3141
BIN_DIR = Path(sys.executable).parent
SERVER_BIN = "/usr/sbin/sentry-server"
EXPORT_MARKER = "dataindex.json"
NODEINFO = ".nodeinfo"
OPERATION_SUFFIX = ".operation.json"  # the trail of an import or upgrade (the formula's sentry_journal)


class Failure(Exception):
    """An action failed; the message says what to do."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentry-server",
        description="Run the sentry package index server or one of its admin actions.",
        epilog="Arguments after '--' are passed to devpi-server unchanged.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--init", action="store_true", help="initialise an empty serverdir")
    action.add_argument("--export", metavar="DIR", help="export all data into DIR (absent or empty)")
    action.add_argument("--import", dest="import_dir", metavar="DIR", help="import an export into a fresh serverdir")
    action.add_argument(
        "--fsck", action="store_true", help="check that every file in the database exists with its checksum"
    )
    action.add_argument(
        "--gen-config",
        action="store_true",
        help="write gen-config/supervisor-sentry.conf and gen-config/nginx-sentry.conf",
    )
    action.add_argument("--version", action="store_true", help="print the package and component versions")

    parser.add_argument("--serverdir", default=DEFAULT_SERVERDIR, help=f"data directory (default {DEFAULT_SERVERDIR})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    parser.add_argument("--master-url", metavar="URL", type=http_url, help="run as a replica of the master at URL")
    parser.add_argument(
        "--role", choices=("standalone", "primary", "replica"), help="replication role (primary serves replicas)"
    )
    parser.add_argument("--secretfile", metavar="FILE", help="shared secret file; the same on master and replicas")
    parser.add_argument("--outside-url", metavar="URL", type=http_url, help="URL the server is reached at from outside")
    parser.add_argument("--theme", metavar="DIR", help="devpi-web theme directory (templates/, static/)")
    parser.add_argument("--config", "-c", metavar="FILE", help="devpi-server YAML configuration file")
    parser.add_argument("--offline-mode", action="store_true", help="never contact upstream mirrors")
    parser.add_argument(
        "--root-passwd-file", metavar="FILE", help="with --init: read the root password from FILE, '-' for stdin"
    )
    parser.add_argument(
        "--no-root-pypi", action="store_true", help="with --init/--import: do not create the root/pypi mirror"
    )
    parser.add_argument(
        "--hard-links", action="store_true", help="with --export/--import: hard-link release files instead of copying"
    )
    parser.add_argument(
        "--no-events",
        action="store_true",
        help="with --import: end without processing devpi-web's events (search index, docs): the server "
        "processes them after its start",
    )
    return parser


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace, passthrough: list[str]) -> None:
    """Reject flags that mean nothing (or something dangerous) with the chosen action."""
    exporting = args.export is not None
    importing = args.import_dir is not None
    daemon = not (args.init or exporting or importing or args.fsck or args.gen_config or args.version)
    if args.root_passwd_file and not args.init:
        parser.error("--root-passwd-file only goes with --init")
    if args.no_root_pypi and not (args.init or importing):
        parser.error("--no-root-pypi only goes with --init or --import")
    if args.hard_links and not (exporting or importing):
        parser.error("--hard-links only goes with --export or --import")
    if args.no_events and not importing:
        parser.error("--no-events only goes with --import")
    if args.master_url and (exporting or importing):
        parser.error("--master-url cannot go with --export/--import: a replica copies its data from the master")
    if args.master_url and args.role not in (None, "replica"):
        parser.error(f"--master-url makes a replica; it cannot go with --role {args.role}")
    if args.role == "replica" and not args.master_url:
        parser.error("--role replica needs --master-url")
    if args.master_url and args.init and args.root_passwd_file:
        parser.error("a replica takes its users from the master: --root-passwd-file cannot go with --master-url")
    if passthrough and not (daemon or args.gen_config):
        parser.error("arguments after '--' are for the server only")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, passthrough = split_passthrough(argv)
    parser = build_parser()
    args = parser.parse_args(own)
    check_combinations(parser, args, passthrough)
    try:
        if args.version:
            print(version_line("sentry-server"))
            return 0
        if args.init:
            return init(args)
        if args.export is not None:
            return export(args)
        if args.import_dir is not None:
            return import_(args)
        if args.fsck:
            return fsck(args)
        if args.gen_config:
            return gen_config(args, passthrough)
        return serve(args, passthrough)
    except Failure as exc:
        print(f"sentry-server: error: {exc}", file=sys.stderr)
        return 1


# --- shared pieces -------------------------------------------------------


def devpi_bin(name: str) -> str:
    return str(BIN_DIR / name)


def storage_args(args: argparse.Namespace) -> list[str]:
    """Flags every devpi command needs to find and read the serverdir."""
    result = ["--serverdir", str(Path(args.serverdir).absolute())]
    if args.config:
        result += ["--configfile", args.config]
    return result


def server_args(args: argparse.Namespace) -> list[str]:
    """devpi-server flags for the daemon (also baked into generated configs)."""
    result = [*storage_args(args), "--host", args.host, "--port", str(args.port)]
    if args.master_url:
        result += ["--role", "replica", "--primary-url", args.master_url]
    elif args.role:
        result += ["--role", args.role]
    for flag, value in (
        ("--secretfile", args.secretfile),
        ("--outside-url", args.outside_url),
        ("--theme", args.theme),
    ):
        if value:
            result += [flag, value]
    if args.offline_mode:
        result.append("--offline-mode")
    return result


def is_initialised(serverdir: Path) -> bool:
    return (serverdir / NODEINFO).exists()


def is_empty_or_absent(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def run_devpi(name: str, arguments: list[str], cwd: str | None = None, quiet: bool = False) -> None:
    """Run one of devpi's commands; ``quiet`` keeps its output for the error message only."""
    completed = subprocess.run([devpi_bin(name), *arguments], cwd=cwd, capture_output=quiet, text=True, check=False)
    if completed.returncode != 0:
        detail = f": {completed.stderr.strip()}" if quiet else " (its message is above)"
        raise Failure(f"{name} failed with exit code {completed.returncode}{detail}")


# --- actions -------------------------------------------------------------


def operation_alive(record: dict) -> bool:
    """Whether the process that keeps the trail ``record`` still runs: the same process (its start time,
    as the formula's sentry_journal records it), not another that got its pid after a crash."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19] == record.get("pid_start")
    except (OSError, IndexError):
        pass
    try:  # /proc hides other users' processes (hidepid): only whether it exists can be told
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def interrupted_operation(serverdir: Path) -> str | None:
    """What an import or upgrade that has not ended says of ``serverdir`` (its trail beside it), unless it
    started the server itself and still runs; None when the server may serve."""
    trail = serverdir.absolute().parent / (serverdir.absolute().name + OPERATION_SUFFIX)
    try:
        record = json.loads(trail.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"{trail} is unreadable ({exc})"
    # 'serve' lets the upgrade start the server on the new data to check it. Once the upgrade is dead
    # (kill -9, reboot) that data is unchecked and sentry_data.recover may roll it back: a supervisord
    # restarting the program must not serve it (and take writes recover would set aside).
    if record.get("serve") and operation_alive(record):
        return None
    return (
        f"an {record.get('operation', 'operation')} of {serverdir} has not ended (step {record.get('step')!r}, "
        f"trail {trail}); its data may be aside in {record.get('backup') or 'none yet'}. "
        f"Not serving over it: run 'salt-call sentry_data.recover' (or wait for the operation to end)"
    )


def serve(args: argparse.Namespace, passthrough: list[str]) -> int:
    serverdir = Path(args.serverdir)
    interrupted = interrupted_operation(serverdir)
    if interrupted:
        raise Failure(interrupted)
    if not is_initialised(serverdir):
        raise Failure(
            f"{serverdir} holds no initialised server: run 'sentry-server --init --serverdir {serverdir}' first"
        )
    if args.theme and not Path(args.theme).is_dir():
        raise Failure(f"theme directory {args.theme} does not exist")
    command = [devpi_bin("devpi-server"), *server_args(args), *passthrough]
    os.execv(command[0], command)  # noqa: S606 - the daemon replaces this process for its supervisor
    return 1  # not reached


def read_root_password(source: str | None) -> str:
    if source is None and sys.stdin.isatty():
        first = getpass.getpass("root password: ")
        if first != getpass.getpass("root password again: "):
            raise Failure("the two passwords differ")
        return first
    if source in (None, "-"):
        text = sys.stdin.readline()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise Failure(f"cannot read the root password file {source}: {exc.strerror}") from None
        text = text.splitlines()[0] if text else ""
    return text.rstrip("\r\n")


def init(args: argparse.Namespace) -> int:
    serverdir = Path(args.serverdir)
    if is_initialised(serverdir):
        raise Failure(
            f"{serverdir} is already initialised; it is never initialised twice (move it aside to start over)"
        )
    if not is_empty_or_absent(serverdir):
        raise Failure(f"{serverdir} is not empty; --init needs an empty or absent directory")
    arguments = ["devpi-init", *storage_args(args)]
    if args.master_url:
        arguments += ["--role", "replica", "--primary-url", args.master_url]
    else:
        password = read_root_password(args.root_passwd_file)
        if not password:
            raise Failure("the root password is empty: give one with --root-passwd-file FILE or on stdin")
        if args.role:
            arguments += ["--role", args.role]
        # In-process: the password never reaches a command line. One word with
        # '=': a password starting with '-' must not read as another option.
        arguments.append(f"--root-passwd={password}")
    if args.no_root_pypi:
        arguments.append("--no-root-pypi")
    from devpi_server.init import init as devpi_init

    created = not serverdir.exists()
    code = devpi_init(argv=arguments)
    if code != 0:
        if created and serverdir.exists():
            shutil.rmtree(serverdir)
        raise Failure(f"devpi-init failed with exit code {code}")
    print(f"initialised {serverdir}")
    return 0


def export(args: argparse.Namespace) -> int:
    serverdir, target = Path(args.serverdir), Path(args.export)
    if not is_initialised(serverdir):
        raise Failure(f"{serverdir} holds no initialised server: nothing to export")
    if not is_empty_or_absent(target):
        raise Failure(f"export directory {target} must be absent or empty")
    if target.absolute().is_relative_to(serverdir.absolute()):
        raise Failure(f"export directory {target} must lie outside the serverdir {serverdir}")
    arguments = storage_args(args)
    if args.hard_links:
        arguments.append("--hard-links")
    try:
        run_devpi("devpi-export", [*arguments, str(target)])
    except Failure:
        shutil.rmtree(target, ignore_errors=True)
        raise
    print(f"exported {serverdir} to {target}")
    return 0


def import_(args: argparse.Namespace) -> int:
    """Import into a scratch directory beside the serverdir, then move it in place.

    A failed import thus leaves the serverdir as it was (absent or empty). Run by root, devpi-import itself
    runs as the serverdir's owner (its parent's where it is absent): an export is the service user's work,
    and a link in it must never read what only root may.
    """
    serverdir, source = Path(args.serverdir).absolute(), Path(args.import_dir)
    if not source.is_dir():
        raise Failure(f"export directory {source} does not exist")
    if not (source / EXPORT_MARKER).is_file():
        raise Failure(f"{source} is not a sentry export (no {EXPORT_MARKER})")
    if not is_empty_or_absent(serverdir):
        raise Failure(
            f"serverdir {serverdir} is not empty: import only goes into a fresh serverdir (move the old one aside)"
        )
    serverdir.parent.mkdir(parents=True, exist_ok=True)
    owner = (serverdir if serverdir.exists() else serverdir.parent).stat()
    scratch = Path(tempfile.mkdtemp(prefix=f".{serverdir.name}.import-", dir=serverdir.parent))
    os.chown(scratch, owner.st_uid, owner.st_gid)
    arguments = ["--serverdir", str(scratch)]
    if args.config:
        arguments += ["--configfile", args.config]
    if args.no_root_pypi:
        arguments.append("--no-root-pypi")
    if args.hard_links:
        arguments.append("--hard-links")
    if args.no_events:
        arguments.append("--no-events")
    try:
        as_owner(owner.st_uid, owner.st_gid, lambda: run_devpi_import([*arguments, str(source)]))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if serverdir.exists():
        shutil.copystat(serverdir, scratch)
        serverdir.rmdir()
    scratch.rename(serverdir)
    print(f"imported {source} into {serverdir}")
    return 0


def as_owner(uid: int, gid: int, action) -> None:
    """``action()`` in a child process as ``uid``/``gid`` (with the user's groups) when root runs this and the
    owner is another user; else here. Raises Failure when the child fails (it printed why)."""
    if os.getuid() != 0 or uid == 0:
        action()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child ends here, whatever happens
        code = 1
        try:
            import pwd

            os.initgroups(pwd.getpwuid(uid).pw_name, gid)
            os.setgid(gid)
            os.setuid(uid)
            action()
            code = 0
        except Failure as exc:
            print(f"sentry-server: error: {exc}", file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise Failure("the import failed (as the serverdir's owner; its message is above)")


def run_devpi_import(arguments: list[str]) -> None:
    """devpi-import, in this process. It makes every user it imports with an empty password and then sets
    the exported hash over it: each of those argon2 hashes of the empty password costs about 0.1 s, so a
    thousand users would add minutes to an upgrade's write window. The hash of the empty password is made
    once and given to every user instead; what is stored is what devpi stores (an exported user without
    a hash keeps a valid hash of the empty password, as devpi leaves it)."""
    import devpi_server.model
    from devpi_server.importexport import import_ as devpi_import

    hash_password, empty = devpi_server.model.hash_password, []

    def hash_once_for_empty(password: str) -> str:
        if password != "":
            return hash_password(password)
        if not empty:
            empty.append(hash_password(""))
        return empty[0]

    devpi_server.model.hash_password = hash_once_for_empty
    try:
        code = devpi_import(argv=["devpi-import", *arguments])
    except Exception as exc:  # as devpi-import's own command would: the traceback, then why
        traceback.print_exc()
        raise Failure(f"devpi-import failed: {exc}") from None
    finally:
        devpi_server.model.hash_password = hash_password
    if code != 0:
        raise Failure(f"devpi-import failed with exit code {code} (its message is above)")


def fsck(args: argparse.Namespace) -> int:
    """devpi-fsck: every file the database lists is on disk with its checksum; exit 1 naming those that are not."""
    serverdir = Path(args.serverdir)
    if not is_initialised(serverdir):
        raise Failure(f"{serverdir} holds no initialised server: nothing to check")
    run_devpi("devpi-fsck", storage_args(args))
    print(f"checked {serverdir}: every file is there with its checksum")
    return 0


SUPERVISOR_TEMPLATE = """\
[program:sentry-server]
command = {command}
user = {user}
directory = {directory}
priority = 999
startsecs = 5
autorestart = true
stopsignal = TERM
stopwaitsecs = 60
redirect_stderr = true
stdout_logfile = /var/log/sentry/sentry-server.log
stdout_logfile_maxbytes = 10MB
stdout_logfile_backups = 5
environment = HOME="{directory}",LANG="C.UTF-8"
"""


def gen_config(args: argparse.Namespace, passthrough: list[str]) -> int:
    flags = server_args(args) + passthrough
    destination = Path.cwd() / "gen-config"
    destination.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run_devpi("devpi-gen-config", flags, cwd=scratch, quiet=True)
        shutil.copyfile(Path(scratch) / "gen-config" / "nginx-devpi.conf", destination / "nginx-sentry.conf")
    user = os.environ.get("LOGNAME") or getpass.getuser()
    directory = Path(args.serverdir).absolute().parent
    command = shlex.join([SERVER_BIN, *flags])
    (destination / "supervisor-sentry.conf").write_text(
        SUPERVISOR_TEMPLATE.format(command=command, user=user, directory=directory), encoding="utf-8"
    )
    for name in ("supervisor-sentry.conf", "nginx-sentry.conf"):
        print(f"wrote gen-config/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

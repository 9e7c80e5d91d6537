"""``hubkeeper <command>``: the one entry point of the suite.

Exit codes: 0 done; 1 a runtime failure (e.g. the endpoint's port is taken); 2 an invalid
configuration or command line; 75 (``EX_TEMPFAIL``) another process holds the lock the
command needs. Every failure ends in :func:`fatal`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from hubkeeper import __version__, log, reference
from hubkeeper.config import Config, ConfigError
from hubkeeper.files import LockHeld
from hubkeeper.loader import load, unknown_variables
from hubkeeper.redact import redact

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: retry later


DaemonMain = Callable[[Config, argparse.Namespace], int]


def check_config(args: argparse.Namespace) -> int:
    """Validate only: the problems on stderr, one per line, and exit 2 (no ``fatal`` event)."""
    try:
        load(args.file)
    except ConfigError as error:
        print(*error.problems, sep="\n", file=sys.stderr)
        return EXIT_CONFIG
    for name, closest in unknown_variables(os.environ):
        hint = f" (did you mean {closest}?)" if closest else ""
        print(f"warning: {name} is not a hubkeeper variable{hint}", file=sys.stderr)
    print(f"{args.file}: ok")
    return 0


def exit_code(error: Exception) -> int:
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, LockHeld):
        return EXIT_LOCKED
    return EXIT_RUNTIME


def fatal(command: str, error: Exception) -> int:
    """The end of every failed command: a JSON ``fatal`` event on stdout (with the traceback
    when the failure was not foreseen), a human line on stderr (an invalid config's
    problems, one per line), and the exit code of the failure's kind."""
    code = exit_code(error)
    if isinstance(error, ConfigError):
        lines = error.problems
    else:
        message = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, RuntimeError):
            message = f"{type(error).__name__}: {message}"
        lines = [f"{command}: {message}"]
    if not structlog.is_configured():  # failed before the config's logging was set up
        log.configure("info")
    foreseen = isinstance(error, ConfigError | LockHeld)
    log.get_logger(__name__).error(
        "fatal",
        command=command,
        error=lines[0] if len(lines) == 1 else lines,
        exit_code=code,
        exc_info=False if foreseen else error,
    )
    print(*(redact(line) for line in lines), sep="\n", file=sys.stderr)
    return code


def add_daemon_command(
    commands: argparse._SubParsersAction, name: str, help_text: str, run: DaemonMain | str
) -> argparse.ArgumentParser:
    """A subcommand that loads ``--config`` (exit 2 when invalid), sets up logging, runs.

    ``run`` may be ``"module:function"``: imported only when the command runs, so each
    daemon loads its own dependencies and not every other daemon's (memory per process).
    """
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument(
        "--config",
        default=os.environ.get("HUBKEEPER_CONFIG", "hubkeeper.toml"),
        help="path of hubkeeper.toml (default: $HUBKEEPER_CONFIG or ./hubkeeper.toml)",
    )

    def start(args: argparse.Namespace) -> int:
        config = load(args.config)
        log.configure(config.logging.level, config.logging.secret_words)
        for name, closest in unknown_variables(os.environ):
            log.get_logger(__name__).warning(
                "unknown_environment_variable", variable=name, closest=closest
            )
        return _resolve(run)(config, args)

    parser.set_defaults(func=start)
    return parser


def _resolve(run: DaemonMain | str) -> DaemonMain:
    if not isinstance(run, str):
        return run
    module, _, function = run.partition(":")
    return getattr(importlib.import_module(module), function)


def ndjson_target(value: str) -> str:
    """``--output``: ``ndjson`` (stdout, ``-``) or ``ndjson=FILE``."""
    kind, equals, path = value.partition("=")
    if kind != "ndjson" or (equals and not path):
        raise argparse.ArgumentTypeError(f"got {value!r}, expected ndjson or ndjson=FILE")
    return path or "-"


def add_ship_logs_arguments(parser: argparse.ArgumentParser) -> None:
    """``--once --output ndjson[=FILE]``: print the documents instead of shipping them."""
    parser.add_argument(
        "--once",
        action="store_true",
        help="read every source to its current end, print the documents, commit nothing, "
        "exit (with --output)",
    )
    parser.add_argument(
        "--output",
        type=ndjson_target,
        metavar="ndjson[=FILE]",
        help="with --once: print the documents as NDJSON to stdout, or to FILE (replaced "
        "atomically); the log goes to stderr",
    )
    start = parser.get_default("func")

    def checked(args: argparse.Namespace) -> int:
        if args.once != (args.output is not None):
            parser.error("--once and --output go together: --once --output ndjson[=FILE]")
        return start(args)

    parser.set_defaults(func=checked)


def up(args: argparse.Namespace) -> int:
    """Run the local stack until Ctrl-C or SIGTERM."""
    from hubkeeper.deploy.elasticsearch import VERSIONS, running_log_store
    from hubkeeper.deploy.stack import DAEMONS, default_ports, running_stack
    from hubkeeper.deploy.swarm import Swarm

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hubkeeper-stack-"))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def progress(message: str) -> None:
        print(f"[hubkeeper up] {message}", flush=True)

    with contextlib.ExitStack() as running:
        swarm = None
        if args.nodes > 1:  # torn down last: namespaces, engines and all
            swarm = running.enter_context(Swarm(workdir / "swarm", args.nodes, progress))
        log_store = running.enter_context(
            running_log_store(workdir, progress, VERSIONS[args.elasticsearch])
        )
        stack = running.enter_context(
            running_stack(
                workdir,
                ports=None if args.random_ports else default_ports(),
                watcher={},
                prometheus=True,
                daemons=tuple(command for command in DAEMONS if command != "watch-hubs"),
                overrides=log_store,
                progress=progress,
                swarm=swarm,
            )
        )
        preview = workdir / "dashboards"
        progress(f"rendering the dashboards' preview into {preview}")
        main(["dashboards", "preview", "--out", str(preview), "--elasticsearch",
              stack.config.shipper.elasticsearch.hosts[0]])  # fmt: skip
        print(stack.describe(), flush=True)
        print(f"Dashboards (static preview, re-render with `hubkeeper dashboards preview`): "
              f"{preview}/*.html", flush=True)  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            stopping.wait()
        progress("stopping")
    return 0


def _node_count(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 9:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number from 1 to 9")
    return int(value)


class _SubCommands(argparse._SubParsersAction):
    """Subcommands whose own ``--help`` starts with the line their parent lists, and which
    leave their full name (``hubkeeper alerts render``) in ``args.command_prog``."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("description", kwargs.get("help"))
        parser = super().add_parser(name, **kwargs)
        parser.set_defaults(command_prog=parser.prog)
        return parser


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubCommands)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hubkeeper", description="Monitoring and reliability suite for JupyterHub."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version").set_defaults(
        func=lambda _args: print(__version__) or 0
    )
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", help="path of hubkeeper.toml")
    check.set_defaults(func=check_config)
    commands.add_parser(
        "config-reference", help="print the configuration reference (a Markdown table)"
    ).set_defaults(func=lambda _args: print(reference.table(), end="") or 0)
    add_daemon_command(
        commands,
        "watch-hubs",
        "probe the hubs and fail NGINX over to a standby",
        "hubkeeper.watchers.hubs.daemon:watch_hubs",
    )
    add_daemon_command(
        commands,
        "agent",
        "on a hub or NGINX host: run the leading watcher's actions, refusing stale fencing tokens",
        "hubkeeper.watchers.hubs.daemon:agent",
    )
    switch = add_daemon_command(
        commands,
        "failover",
        "planned switch of the active hub (no automatic fail-back)",
        "hubkeeper.watchers.hubs.daemon:failover",
    )
    switch.add_argument("--to", required=True, help="name of the hub to make active")
    switch.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    show = add_daemon_command(
        commands,
        "status",
        "one screen: hubs, user servers, log shipping, culler, alerts",
        "hubkeeper.status:status",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add_daemon_command(
        commands,
        "export-containers",
        "serve per-container metrics (Prometheus) and PRTG sensors of user servers",
        "hubkeeper.watchers.containers.daemon:export_containers",
    )
    ship = add_daemon_command(
        commands,
        "ship-logs",
        "ship hub, proxy, NGINX and container logs",
        "hubkeeper.shippers.daemon:ship_logs",
    )
    add_ship_logs_arguments(ship)
    cull = add_daemon_command(
        commands,
        "cull",
        "stop idle user servers (busy-aware), optionally delete idle users and orphans",
        "hubkeeper.watchers.culler.daemon:cull",
    )
    cull.add_argument("--once", action="store_true", help="one cycle, then exit (for cron)")
    cull.add_argument("--dry-run", action="store_true", help="log what would be done, do nothing")
    add_daemon_command(
        commands,
        "watch-storage",
        "probe this node's notebook mounts (hung, full), the NFS server and Owncloud",
        "hubkeeper.watchers.storage.daemon:watch_storage",
    )
    alerts = commands.add_parser("alerts", help="Prometheus and Alertmanager configuration")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    render = add_daemon_command(
        alert_commands,
        "render",
        "write prometheus.yml, the alert rules and alertmanager.yml from the config",
        "hubkeeper.alerts.render:render_command",
    )
    render.add_argument("--out", required=True, help="folder to write into (created if missing)")
    render.add_argument(
        "--check", action="store_true", help="then check the result with promtool and amtool"
    )
    from hubkeeper.dashboards.cli import add_commands as add_dashboard_commands

    add_dashboard_commands(commands)
    add_daemon_command(
        commands,
        "keepalived-config",
        "write this NGINX host's keepalived.conf from [keepalived], checked by keepalived -t",
        "hubkeeper.deploy.keepalived:write_command",
    ).add_argument("--out", required=True, help="folder of keepalived.conf")
    install = commands.add_parser(
        "install-files",
        help="write the systemd units, the compose file and the example config for this "
        "installation's paths",
    )
    install.add_argument("dest", help="folder to write into (created if missing)")
    install.add_argument(
        "--config-path",
        help="where the units find hubkeeper.toml (default: /etc/hubkeeper/hubkeeper.toml)",
    )
    install.set_defaults(func=lambda args: _resolve("hubkeeper.deploy.install:install_files")(args))
    run = commands.add_parser(
        "up",
        help="run the whole local stack (hubs, NGINX, every daemon, Prometheus, "
        "Alertmanager, Elasticsearch) until Ctrl-C",
    )
    run.add_argument("--workdir", help="folder for state and logs (default: a new temp folder)")
    run.add_argument(
        "--random-ports", action="store_true", help="free ports instead of the defaults (8000, ...)"
    )
    run.add_argument(
        "--nodes",
        type=_node_count,
        default=1,
        help="1: user servers on this machine's Docker engine (default); 2 to 9: on a Swarm "
        "of that many engines in network namespaces (a manager, the rest workers; needs root)",
    )
    run.add_argument(
        "--elasticsearch",
        choices=("9", "8"),
        default="9",
        help="the major version of the local Elasticsearch (default 9: 9.2.0; 8: 8.19.21)",
    )
    run.set_defaults(func=up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as error:
        return fatal(args.command_prog, error)


if __name__ == "__main__":
    sys.exit(main())

"""``hubkeeper <command>``: the one entry point of the suite."""

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

from hubkeeper import __version__, log
from hubkeeper.config import Config, ConfigError, load

EXIT_CONFIG = 2


DaemonMain = Callable[[Config, argparse.Namespace], int]


def load_config(path: str) -> Config | None:
    """The validated config, or None after printing one line per problem to stderr."""
    try:
        return load(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return None


def check_config(args: argparse.Namespace) -> int:
    if load_config(args.file) is None:
        return EXIT_CONFIG
    print(f"{args.file}: ok")
    return 0


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
        config = load_config(args.config)
        if config is None:
            return EXIT_CONFIG
        log.configure(config.logging.level, config.logging.secret_words)
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
    from deploy.elasticsearch import running_log_store
    from deploy.stack import DAEMONS, default_ports, running_stack

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hubkeeper-stack-"))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def progress(message: str) -> None:
        print(f"[hubkeeper up] {message}", flush=True)

    with (
        running_log_store(workdir, progress) as log_store,
        running_stack(
            workdir,
            ports=None if args.random_ports else default_ports(),
            watcher={},
            prometheus=True,
            daemons=tuple(command for command in DAEMONS if command != "watch-hubs"),
            overrides=log_store,
            progress=progress,
        ) as stack,
    ):
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubkeeper", description="Monitoring and reliability suite for JupyterHub."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version").set_defaults(
        func=lambda _args: print(__version__) or 0
    )
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", help="path of hubkeeper.toml")
    check.set_defaults(func=check_config)
    add_daemon_command(
        commands,
        "watch-hubs",
        "probe the hubs and fail NGINX over to a standby",
        "watchers.hubs.daemon:watch_hubs",
    )
    switch = add_daemon_command(
        commands,
        "failover",
        "planned switch of the active hub (no automatic fail-back)",
        "watchers.hubs.daemon:failover",
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
        "watchers.containers.exporter:export_containers",
    )
    ship = add_daemon_command(
        commands,
        "ship-logs",
        "ship hub, proxy, NGINX and container logs",
        "shippers.shipper:ship_logs",
    )
    add_ship_logs_arguments(ship)
    cull = add_daemon_command(
        commands,
        "cull",
        "stop idle user servers (busy-aware), optionally delete idle users and orphans",
        "watchers.culler.daemon:cull",
    )
    cull.add_argument("--once", action="store_true", help="one cycle, then exit (for cron)")
    cull.add_argument("--dry-run", action="store_true", help="log what would be done, do nothing")
    alerts = commands.add_parser("alerts", help="Prometheus and Alertmanager configuration")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    render = add_daemon_command(
        alert_commands,
        "render",
        "write prometheus.yml, the alert rules and alertmanager.yml from the config",
        "alerts.render:render_command",
    )
    render.add_argument("--out", required=True, help="folder to write into (created if missing)")
    render.add_argument(
        "--check", action="store_true", help="then check the result with promtool and amtool"
    )
    from dashboards.cli import add_commands as add_dashboard_commands

    add_dashboard_commands(commands)
    run = commands.add_parser(
        "up",
        help="run the whole local stack (hubs, NGINX, every daemon, Prometheus, "
        "Alertmanager, Elasticsearch) until Ctrl-C",
    )
    run.add_argument("--workdir", help="folder for state and logs (default: a new temp folder)")
    run.add_argument(
        "--random-ports", action="store_true", help="free ports instead of the defaults (8000, ...)"
    )
    run.set_defaults(func=up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

"""``hubkeeper <command>``: the one entry point of the suite."""

from __future__ import annotations

import argparse
import contextlib
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
    commands: argparse._SubParsersAction, name: str, help_text: str, run: DaemonMain
) -> argparse.ArgumentParser:
    """A subcommand that loads ``--config`` (exit 2 when invalid), sets up logging, runs."""
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
        log.configure(config.logging.level)
        return run(config, args)

    parser.set_defaults(func=start)
    return parser


def up(args: argparse.Namespace) -> int:
    """Run the local stack until Ctrl-C or SIGTERM."""
    from deploy.stack import default_ports, running_stack

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hubkeeper-stack-"))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def progress(message: str) -> None:
        print(f"[hubkeeper up] {message}", flush=True)

    with running_stack(workdir, ports=default_ports(), progress=progress) as stack:
        print(stack.describe(), flush=True)
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
    run = commands.add_parser(
        "up", help="run the local stack (Docker engine, images, hub, NGINX) until Ctrl-C"
    )
    run.add_argument("--workdir", help="folder for state and logs (default: a new temp folder)")
    run.set_defaults(func=up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

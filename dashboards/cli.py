"""``hubkeeper dashboards export|preview|load``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hubkeeper.dashboards import auth

DEFAULT_PREFIX = "hubkeeper-logs"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The ``dashboards`` command group."""
    group = commands.add_parser("dashboards", help="Kibana dashboards: export, preview, load")
    sub = group.add_subparsers(dest="dashboards_command", required=True, metavar="COMMAND")

    export = sub.add_parser("export", help="write the Kibana saved objects (NDJSON)")
    export.add_argument("file", type=Path, help="NDJSON file to write ('-': stdout)")
    export.set_defaults(func=export_command)

    show = sub.add_parser("preview", help="run every panel's query, write static HTML pages")
    show.add_argument("--out", type=Path, required=True, help="folder for the pages")
    show.add_argument("--elasticsearch", default="http://127.0.0.1:9200", help="node URL")
    show.add_argument("--since", default="now-24h", help="time range start (date math)")
    show.set_defaults(func=preview_command)

    load = sub.add_parser("load", help="import the saved objects into Kibana (overwrite)")
    load.add_argument("--kibana", required=True, help="Kibana URL, e.g. http://127.0.0.1:5601")
    load.add_argument("--space", help="Kibana space id (default: the default space)")
    load.add_argument("--timeout", type=float, default=60.0, help="seconds")
    load.set_defaults(func=load_command)

    for parser in (show, load):
        auth.add_arguments(parser)
    for parser in (export, show, load):
        parser.add_argument(
            "--index-prefix", default=DEFAULT_PREFIX,
            help=f"the shipper's index_prefix (default {DEFAULT_PREFIX})",
        )  # fmt: skip


def _ndjson(prefix: str) -> str:
    # Here, not at the top: the CLI adds these commands for every command it runs.
    from hubkeeper.dashboards.kibana import check, saved_objects, to_ndjson

    text = to_ndjson(saved_objects(prefix))
    problems = check(text)
    if problems:  # a bug in the definitions: never hand Kibana a broken file
        raise AssertionError("\n".join(problems))
    return text


def export_command(args: argparse.Namespace) -> int:
    text = _ndjson(args.index_prefix)
    if str(args.file) == "-":
        sys.stdout.write(text)
    else:
        args.file.write_text(text, encoding="utf-8")
        print(f"{args.file}: {len(text.splitlines()) - 1} saved objects")
    return 0


def preview_command(args: argparse.Namespace) -> int:
    from hubkeeper.dashboards.preview import PreviewError, preview

    try:
        session = auth.from_arguments(args).session()
        results = preview(
            args.out, args.elasticsearch, args.index_prefix, args.since, session=session
        )
    except (auth.CredentialsError, PreviewError) as error:
        print(f"preview failed: {error}", file=sys.stderr)
        return 1
    for dashboard_id, answers in results.items():
        empty = [r.panel.id for r in answers if r.empty]
        note = f" (no data: {', '.join(empty)})" if empty else ""
        print(f"{args.out / (dashboard_id + '.html')}: {len(answers)} panels{note}")
    return 0


def load_command(args: argparse.Namespace) -> int:
    from hubkeeper.dashboards.load import LoadError, load

    try:
        credentials = auth.from_arguments(args)
        count = load(_ndjson(args.index_prefix), args.kibana, credentials, args.space, args.timeout)
    except (auth.CredentialsError, LoadError) as error:
        print(f"load failed: {error}", file=sys.stderr)
        return 1
    print(f"{count} saved objects imported into {args.kibana}")
    return 0

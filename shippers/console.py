"""``hubkeeper ship-logs --once --output ndjson[=FILE]``: the documents the shipper would
send, printed as NDJSON instead (as Filebeat's console output and Vector's console sink),
to check the parsing of one's own logs before shipping them.

The shipper's own reader, set up as the daemon sets it up (sources, parsers, container
lookups, redaction), runs on a throwaway state folder: nothing in ``state_dir`` is locked,
read or written, no output is contacted, no offset is kept. Every file is read to its
current end, and that end counts as quiet: a pending multi-line event is flushed, and a
last line without its newline is taken as it is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

from hubkeeper.config import Config
from hubkeeper.log import get_logger
from hubkeeper.shippers.shipper import READ_BUDGET, Shipper
from hubkeeper.shippers.sources import ContainerInfo, Files, Tail

log = get_logger(__name__)
STDOUT = "-"
Ends = dict[str, tuple[Tail, int]]  # entry key: the file's tail and its size at the start


def print_documents(
    config: Config, target: str, container_info: ContainerInfo | None = None
) -> int:
    """Print every source's documents as NDJSON to stdout (``target`` ``-``) or to the
    file ``target`` (written beside it, then renamed over it); log lines go to stderr.

    0 when every file was read to its end; 1 when a read failed or a file was not read to
    its end (logged, the rest printed), or the output failed."""
    stdout = sys.stdout.buffer
    with contextlib.redirect_stdout(sys.stderr):
        try:
            with tempfile.TemporaryDirectory(prefix="hubkeeper-console-") as scratch:
                shipper = Shipper(_scratch_config(config, scratch), container_info)
                try:
                    with _destination(target, stdout) as out:
                        printed, complete = read_to_end(
                            shipper.files, lambda doc: out.write(doc + b"\n")
                        )
                finally:
                    shipper.stop()
        except BrokenPipeError:  # `| head`: the reader has seen enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
            return 1
        except OSError as error:
            log.error("print_failed", output=target, error=str(error))
            return 1
        log.info("documents_printed", documents=printed, complete=complete, output=target)
    return 0 if complete else 1


def read_to_end(files: Files, emit: Callable[[bytes], object]) -> tuple[int, bool]:
    """Pass the document of every event of every file to ``emit``, reading each file to
    its current end; returns the number of documents, and whether every read succeeded
    and every file was read to its end (if not, what failed is logged)."""
    count = 0

    def counted(doc: bytes) -> None:
        nonlocal count
        count += 1
        emit(doc)

    try:
        files.scan()
    except Exception:
        log.exception("scan_failed")
        return 0, False
    ends = {key: (tail, os.fstat(tail.fd).st_size) for key, tail in files.tails.items()}
    drained = _drain(files, counted, ends)
    unread = [
        (tail, end)
        for key, (tail, end) in ends.items()
        if files.tails.get(key) is not tail or tail.pos < end
    ]
    for tail, end in unread:
        log.error(
            "file_not_read_to_end", source=tail.source.name, path=tail.entry.path,
            read=tail.pos, size=end,
        )  # fmt: skip
    return count, drained and not unread


def _drain(files: Files, emit: Callable[[bytes], None], ends: Ends) -> bool:
    """Read until nothing moves or every file reached its end; False if a read failed."""
    while True:
        try:
            records, moves = files.read(READ_BUDGET, final=True)
        except Exception:
            log.exception("read_failed")
            return False
        for record in records:
            emit(record.doc)
        moved = any(resume != tail.pos for tail, resume, _emitted in moves)
        files.advance(moves)
        if not (records or moved) or all(tail.pos >= end for tail, end in ends.values()):
            return True


def _scratch_config(config: Config, scratch: str) -> Config:
    """The config with the shipper's state in ``scratch``, and an output that is never
    contacted: an Elasticsearch client connects only when used (a Logstash output with
    TLS would read its CA file at once)."""
    section = replace(config.shipper, state_dir=scratch, output="elasticsearch")
    return replace(config, shipper=section)


@contextlib.contextmanager
def _destination(target: str, stdout: IO[bytes]) -> Iterator[IO[bytes]]:
    """Standard output, or a temporary file beside ``target`` renamed over it once
    complete (removed if anything fails)."""
    if target == STDOUT:
        yield stdout
        stdout.flush()
        return
    path = Path(target)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise

"""What a benchmark starts when it is not running, as the tests and ``hubkeeper up`` do:
the Docker engine (``deploy.stack``), stopped again at the end only when started here.
Elasticsearch comes from ``deploy.elasticsearch`` (an instance of the benchmark's own)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker

from hubkeeper.config import DockerConfig
from hubkeeper.deploy.stack import docker_client, start_docker_engine, wait_for_docker


@contextlib.contextmanager
def docker_engine(progress: Callable[[str], None] = print) -> Iterator[docker.DockerClient]:
    """A client of the running engine, or of one started here (its log in a new folder)."""
    url = DockerConfig().url
    client = docker_client(url)
    if client is not None:
        yield client
        return
    log_path = Path(tempfile.mkdtemp(prefix="hubkeeper-bench-dockerd-")) / "dockerd.log"
    progress(f"starting the Docker engine (log: {log_path})")
    engine = start_docker_engine(log_path)
    try:
        yield wait_for_docker(url, log_path)
    finally:
        progress("stopping the Docker engine started for the benchmark")
        engine.stop()

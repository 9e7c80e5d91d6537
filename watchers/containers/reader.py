"""The one set-up of the container reader, shared by the metrics exporter and the culler.

Discovery (the engine's list and events), the cgroup reader with the stats-API fallback,
and the collector over both, all from ``[containers]``: the culler's busy protection reads
a container exactly as the exporter does.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker

from hubkeeper.config import Config
from hubkeeper.watchers.containers.cgroup import CgroupReader
from hubkeeper.watchers.containers.collector import Collector
from hubkeeper.watchers.containers.discovery import Discovery, docker_api
from hubkeeper.watchers.containers.dockerstats import StatsAPIReader


@dataclass(frozen=True)
class ContainerReader:
    api: docker.APIClient
    discovery: Discovery
    collector: Collector
    cgroups: CgroupReader
    stats_api: StatsAPIReader

    def close(self) -> None:
        self.discovery.close()
        self.stats_api.close()
        self.cgroups.close()


def container_reader(config: Config, cache_seconds: float) -> ContainerReader:
    """The reader of this node's engine; snapshots are reused for ``cache_seconds``."""
    section = config.containers
    # stats calls, the events stream and the resync each hold a connection
    api = docker_api(
        section.docker_url or config.docker.url,
        section.docker_timeout,
        section.stats_concurrency + 4,
    )
    discovery = Discovery(api, config.labels)
    cgroups = CgroupReader(section.cgroup_root, section.proc_root)
    stats_api = StatsAPIReader(api, section.stats_concurrency, section.docker_timeout)
    collector = Collector(discovery, cgroups, stats_api, section.source, cache_seconds)
    return ContainerReader(api, discovery, collector, cgroups, stats_api)

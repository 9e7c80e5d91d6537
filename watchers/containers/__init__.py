"""``hubkeeper export-containers``: per-user-server container metrics for Prometheus and PRTG.

Discovery (Docker list + events) -> statistics (cgroup v1/v2 files, or the Docker stats
API) -> one snapshot per scrape -> cAdvisor-named metrics, PRTG sensors, and a
reconciliation of containers against the servers the hub believes running.
"""

"""Watchers: hub health and failover, per-container metrics with PRTG sensors, idle culling."""

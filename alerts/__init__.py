"""Prometheus alert rules, Alertmanager routing and runbooks, generated from hubkeeper.toml."""

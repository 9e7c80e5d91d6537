"""Kibana dashboards as code: panel definitions, saved objects, loader, HTML preview."""

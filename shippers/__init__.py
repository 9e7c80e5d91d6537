"""The log shipper: sources, parsers, spool and registry, outputs (Elasticsearch, Logstash)."""

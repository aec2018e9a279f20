"""The service's own measurements: Prometheus instruments (scraped at ``GET /metrics``) and
``ProgressMetric`` rows (read back at ``GET /v1/metrics``), both recorded off the hot path."""

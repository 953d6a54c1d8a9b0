"""The [http] service: Prometheus metrics, health checks, the status page and its JSON API."""

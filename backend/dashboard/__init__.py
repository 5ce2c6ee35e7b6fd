"""The operator dashboard in the Django admin (/admin/dashboard/): queue, throughput, latency,
workers, failures, cache hits and webhooks, read by bounded queries (selectors.py) and drawn
as server-side SVG (charts.py). docs/operations.md#operator-dashboard."""

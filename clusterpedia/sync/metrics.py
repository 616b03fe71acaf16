"""Prometheus metrics of the sync engine (served by the API server's ``/metrics``).

Labels are the cluster and the resource type (``resource.version.group``); cardinality is
clusters x synced types, the same as the number of watch workers.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "clusterpedia_sync_events_total",
    "Changes applied to the storage, by origin (watch event type, or relist).",
    ["cluster", "resource", "type"],
)
BATCH_SIZE = Histogram(
    "clusterpedia_sync_batch_size",
    "Changes per storage batch.",
    ["cluster", "resource"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000),
)
BATCH_SECONDS = Histogram(
    "clusterpedia_sync_batch_seconds",
    "Time to apply one batch to the storage.",
    ["cluster", "resource"],
)
EVENT_LAG = Histogram(
    "clusterpedia_sync_event_lag_seconds",
    "From receiving a watch event to its batch being stored.",
    ["cluster", "resource"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = Counter(
    "clusterpedia_sync_errors_total",
    "Failures of a worker, by side (member or storage).",
    ["cluster", "resource", "side"],
)
WATCH_RESTARTS = Counter(
    "clusterpedia_sync_watch_restarts_total",
    "Watches that ended in an error or an expired resourceVersion.",
    ["cluster", "resource"],
)
MEMBER_WATCHES = Gauge(
    "clusterpedia_member_watches_open",
    "Watches open to a member cluster (each holds one connection).",
    ["cluster"],
)
MEMBER_REQUESTS = Gauge(
    "clusterpedia_member_requests_in_flight",
    "Lists and gets in flight to a member cluster (each holds one connection meanwhile).",
    ["cluster"],
)

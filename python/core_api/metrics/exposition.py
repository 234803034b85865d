"""The Prometheus text exposition format (version 0.0.4) and the catalogue of series:
every series ``GET /metrics`` can show, its type and its help text (docs/operations.md
lists the same)."""

from __future__ import annotations

import math
from typing import Any

from .registry import HISTOGRAMS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (type, help). Labels are documented in docs/operations.md.
SERIES: dict[str, tuple[str, str]] = {
    "core_api_http_requests_total": (
        "counter",
        "Requests answered, by method, route template and status.",
    ),
    "core_api_http_request_duration_seconds": (
        "histogram",
        "Time from the request reaching the app to its response being sent, by method, "
        "route template and status.",
    ),
    "core_api_rate_limited_total": (
        "counter",
        "Requests refused with 429, by limit (the plan tier, pixel or auth-failures).",
    ),
    "core_api_webhook_deliveries_total": (
        "counter",
        "Webhook delivery attempts recorded, by outcome (success, http_error, "
        "network_error, gone, skipped).",
    ),
    "core_api_webhook_queue_lag_seconds": (
        "gauge",
        "Age of the oldest due webhook delivery not yet delivered (0 when none is due).",
    ),
    "core_api_webhook_queue_due": ("gauge", "Webhook deliveries due now and not yet delivered."),
    "core_api_pixel_buffer_events": (
        "gauge",
        "Pixel events held in memory, by state (pending, in_flight), over all processes.",
    ),
    "core_api_pixel_buffer_capacity": (
        "gauge",
        "Pixel events the buffers can hold, over all processes.",
    ),
    "core_api_pixel_events_written_total": ("counter", "Pixel events written to the database."),
    "core_api_pixel_events_refused_total": (
        "counter",
        "Pixel events refused with 503 because a buffer was full.",
    ),
    "core_api_pixel_flush_duration_seconds": (
        "histogram",
        "Time to write one pixel batch (COPY or executemany, committed).",
    ),
    "core_api_usage_pending_units": (
        "gauge",
        "Metered usage units (api_calls, pixel_events, ...) counted in memory, not yet written.",
    ),
    "core_api_usage_flush_lag_seconds": (
        "gauge",
        "Seconds since the last successful usage flush of the process that is furthest "
        "behind (0 when nothing is pending).",
    ),
    "core_api_usage_flush_duration_seconds": (
        "histogram",
        "Time of one usage flush (one transaction).",
    ),
    "core_api_usage_flush_failures_total": ("counter", "Usage flushes that failed (retried)."),
    "core_api_processes": ("gauge", "Serving processes whose numbers this answer merges."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Any, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = [*pairs, *extra]
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def _bound(value: float) -> str:
    return repr(float(value))


def render(
    counters: list[list[Any]],
    histograms: list[list[Any]],
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> str:
    """The text format: one HELP/TYPE block per name, series sorted by labels."""
    by_name: dict[str, list[str]] = {}
    for name, labels, value in counters:
        by_name.setdefault(name, []).append(f"{name}{_labels(labels)} {_number(value)}")
    for (name, labels), value in gauges.items():
        by_name.setdefault(name, []).append(f"{name}{_labels(labels)} {_number(value)}")
    requests: list[str] = []
    for name, labels, row in histograms:
        bounds = HISTOGRAMS.get(name)
        if bounds is None or len(row) != len(bounds) + 2:
            continue
        lines = by_name.setdefault(name, [])
        running = 0.0
        for bound, count in zip(bounds, row, strict=False):
            running += count
            lines.append(
                f"{name}_bucket{_labels(labels, (('le', _bound(bound)),))} {_number(running)}"
            )
        running += row[len(bounds)]
        lines.append(f"{name}_bucket{_labels(labels, (('le', '+Inf'),))} {_number(running)}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(row[-1])}")
        lines.append(f"{name}_count{_labels(labels)} {_number(running)}")
        if name == "core_api_http_request_duration_seconds":
            requests.append(f"core_api_http_requests_total{_labels(labels)} {_number(running)}")
    if requests:
        by_name.setdefault("core_api_http_requests_total", []).extend(requests)
    out: list[str] = []
    for name in sorted(by_name):
        kind, text = SERIES.get(name, ("untyped", name))
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(sorted(by_name[name]) if kind != "histogram" else by_name[name])
    return "\n".join(out) + "\n"

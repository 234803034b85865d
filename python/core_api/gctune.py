"""Garbage-collector settings for a long-running serving or worker process.

CPython's cyclic collector runs a young collection every 700 net container allocations
and, about every hundred of those, a full one that walks every live object: the imported
modules, the plans, the routes and the caches. Under the mixed load (benchmarks/mix.py) a
``gc.callbacks`` probe counted about four full collections per worker per minute, each
54-91 ms, during which the event loop answers nobody; they showed as the p99.

After start-up, everything allocated so far moves to the permanent generation
(``gc.freeze``) and is never scanned again, and young collections run every 50,000
allocations instead of 700. Almost all of the service's garbage is freed by reference
counting; the collector is only for cycles, and a few megabytes of young objects waiting
a little longer for it cost nothing.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 20)


def tune() -> None:
    """Call once, when the process has started and before it takes traffic."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)

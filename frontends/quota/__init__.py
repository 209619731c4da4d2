"""The quota counters: the edge that carries out the core's Reserve, Settle and Release.

The core decides what a request must reserve and what to answer when it does not fit;
the counters only keep the numbers, atomically.  `reserve` is the one call the request
waits for (it decides admission); `settle` and `release` never block the request path:
they are recorded at once in process, or handed to a background writer by counters that
live elsewhere.
"""

from frontends.quota._base import QuotaCounters
from frontends.quota._local import InProcessCounters

__all__ = ["InProcessCounters", "QuotaCounters"]

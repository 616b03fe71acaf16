"""One backoff for every retry loop: exponential, jittered, and never shorter than a server asked.

A member's 429 or 503 may carry ``Retry-After``; retrying sooner only earns another refusal, so
the server's figure is the floor of the next wait (capped, so a hostile member cannot park a
worker for an hour). Jitter spreads the retries of many workers that failed together (a member
restart fails every type's watch at once).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_RETRY_AFTER = 60.0  # seconds: the most a server's Retry-After can make us wait


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the delta-seconds form; dates are not used by Kubernetes),
    within [0, MAX_RETRY_AFTER]; None when absent or not a number."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass
class Backoff:
    """Waits that double from ``initial`` up to ``maximum``, each jittered to [50%, 150%);
    ``reset`` after a success."""

    initial: float
    maximum: float
    factor: float = 2.0
    _current: float = field(init=False)

    def __post_init__(self) -> None:
        self._current = self.initial

    @property
    def current(self) -> float:
        """The un-jittered base of the next wait."""
        return self._current

    def reset(self) -> None:
        self._current = self.initial

    def next_delay(self, retry_after: float | None = None) -> float:
        """The next wait, at least ``retry_after``; the one after it grows."""
        delay = self._current * (0.5 + random.random())
        self._current = min(self._current * self.factor, self.maximum)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    async def wait(self, retry_after: float | None = None) -> float:
        """Sleep the next wait; return how long it was."""
        delay = self.next_delay(retry_after)
        await asyncio.sleep(delay)
        return delay

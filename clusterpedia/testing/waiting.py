"""Waiting for a condition that other processes make true (tests, benchmarks, the playground)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def eventually(
    check: Callable[[], Any], *, timeout: float = 60, interval: float = 0.5, what: str = ""
) -> Any:
    """Call ``check`` until it returns something truthy, and return that; AssertionError
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)
    return result


async def eventually_async(
    check: Callable[[], Any], *, timeout: float = 30, interval: float = 0.3, what: str = ""
) -> Any:
    """:func:`eventually` for an event loop: ``check`` may return a value or a coroutine."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(interval)

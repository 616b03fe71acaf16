"""The one backoff: doubling, jittered waits that a server's Retry-After can only lengthen."""

from __future__ import annotations

import pytest

from clusterpedia.backoff import MAX_RETRY_AFTER, Backoff, retry_after


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("9999", MAX_RETRY_AFTER), ("soon", None),
     ("nan", None), (None, None)],
)  # fmt: skip
def test_retry_after_is_read_as_seconds_within_bounds(header: str | None, expected: float) -> None:
    headers = {} if header is None else {"Retry-After": header}
    assert retry_after(headers) == expected


def test_waits_double_up_to_the_maximum_each_jittered() -> None:
    backoff = Backoff(1.0, 8.0)
    bases = []
    for _ in range(6):
        base = backoff.current
        bases.append(base)
        assert 0.5 * base <= backoff.next_delay() < 1.5 * base
    assert bases == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.current == 1.0


def test_a_servers_retry_after_is_the_floor_of_the_wait() -> None:
    backoff = Backoff(0.1, 1.0)
    assert backoff.next_delay(retry_after=7.0) >= 7.0
    assert backoff.next_delay(retry_after=1e9) <= max(MAX_RETRY_AFTER, 1.5)
    assert backoff.next_delay(retry_after=0.0) < 1.5  # never shortens the backoff's own wait

"""The time formats the original accepts for ``since`` and ``before``."""

from __future__ import annotations

from datetime import UTC, datetime

from clusterpedia.storage.errors import InvalidQuery


def parse_search_time(value: str, *, what: str) -> datetime:
    """A naive UTC datetime from RFC 3339, ``YYYY-MM-DD hh:mm:ss``, ``YYYY-MM-DD``, or Unix
    seconds (10 digits) / milliseconds (13 digits), chosen as the original chooses."""
    try:
        if not value.isascii():  # strptime and fromisoformat take other scripts' digits
            raise ValueError("not ASCII")
        if "T" in value:
            parsed = datetime.fromisoformat(
                value.replace(" ", "+")
            )  # an unencoded '+' arrives as ' '
        elif " " in value:
            parsed = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        elif "-" in value:
            parsed = datetime.strptime(value, "%Y-%m-%d")
        elif value.isdigit() and len(value) in (10, 13):
            seconds = int(value) / (1000 if len(value) == 13 else 1)
            return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
        else:
            raise ValueError("unknown format")
    except (ValueError, OverflowError, OSError):
        raise InvalidQuery(
            f"invalid {what} {value!r}: use RFC 3339 (2006-01-02T15:04:05Z), "
            "'2006-01-02 15:04:05', '2006-01-02', or Unix seconds (10 digits) or milliseconds "
            "(13 digits)"
        ) from None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 9999-12-31T23:00:00-05:00 is past the year 9999 in UTC
            raise InvalidQuery(f"invalid {what} {value!r}: out of range in UTC") from None
    return parsed

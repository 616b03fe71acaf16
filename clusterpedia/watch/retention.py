"""Keep the change log bounded: prune by age and by count, in the background.

Every serving process runs this; pruning is idempotent, so replicas sharing a database may
race harmlessly. Deletes go in small transactions (``Changes.prune``) and never touch the
``head`` row the writers lock, so sync never waits for pruning.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from clusterpedia.storage import Changes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    max_age: timedelta | None = timedelta(minutes=15)
    max_events: int | None = 200_000
    interval: float = 30.0


async def prune_periodically(log: Changes, retention: Retention) -> None:
    while True:
        await asyncio.sleep(retention.interval)
        try:
            await log.prune(max_age=retention.max_age, max_events=retention.max_events)
        except Exception as error:  # the database may be down; try again next round
            logger.warning("pruning the change log failed: %s", error)

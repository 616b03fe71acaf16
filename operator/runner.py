"""Kopf in its own thread and event loop, as Kopf's embedding guide recommends.

Kopf cancels every task of its loop when it exits and installs signal handlers only in the
main thread; running it beside the API server in one loop would let either cancel the other.
So the operator gets a thread, stop and ready flags, and the process watches both sides: if
the operator thread dies, ``failed`` says so and the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import kopf

from . import import_policies  # noqa: F401  (registers its handlers)
from .handlers import registry
from .runtime import OperatorConfig, Runtime

logger = logging.getLogger(__name__)


class OperatorThread:
    """Runs the Kopf operator until :meth:`stop`."""

    def __init__(
        self,
        config: OperatorConfig,
        *,
        standalone: bool = True,
        priority: int = 0,
        peering_name: str | None = None,
    ):
        self.config = config
        self.standalone = standalone
        self.peering_name = peering_name
        self.priority = priority
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kopf-operator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    memo=Runtime(self.config),
                    clusterwide=True,
                    standalone=self.standalone,
                    peering_name=None if self.standalone else self.peering_name,
                    priority=self.priority,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                )
            )
        except BaseException as error:
            self.error = error
            logger.error("the operator stopped with an error: %r", error)
        finally:
            self.finished.set()

    def start(self, *, timeout: float = 60) -> None:
        """Start and wait until Kopf is watching; raise if it failed first."""
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 10)):
            if self.ready_flag.is_set() or self.finished.is_set():
                break
            deadline.wait(0.1)
        if self.finished.is_set() and not self.stop_flag.is_set():
            raise RuntimeError(f"the operator failed to start: {self.error!r}")
        if not self.ready_flag.is_set():
            raise RuntimeError(f"the operator was not ready after {timeout:.0f}s")

    @property
    def failed(self) -> bool:
        return self.finished.is_set() and not self.stop_flag.is_set()

    def stop(self, *, timeout: float = 30) -> None:
        self.stop_flag.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("the operator did not stop within %.0fs", timeout)

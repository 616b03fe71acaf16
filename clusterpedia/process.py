"""Process-wide tuning of a serving process: open files, garbage collector, TLS buffers, and
a deadline for shutdown. Each says why; ``compose.py`` applies them."""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
from asyncio import sslproto


def raise_open_file_limit(ceiling: int = 1 << 20) -> int:
    """Raise the soft open-file limit to the hard one and say so: every watch holds a
    connection, so N members x T types need N x T descriptors and more (README, "Serving")."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as error:
            print(f"clusterpedia: cannot raise the open-file limit: {error}", file=sys.stderr)
    print(f"clusterpedia: open-file limit {soft}", file=sys.stderr, flush=True)
    return int(soft)


def tune_garbage_collector() -> None:
    """Collect young objects every 50,000 allocations instead of 700, and freeze what start-up
    allocated. A member's list page parses into ~100k dicts and lists that live until the
    page is stored; with the defaults the collector ran ~150 times per page and re-scanned
    every survivor, a third of the sync's CPU ("parse and keep" measured 10x slower than
    "parse and discard"). Nearly everything here is freed by reference
    counting; cycles are still collected, just less often."""
    gc.set_threshold(50_000, 20, 20)
    gc.freeze()


def limit_tls_read_buffers(size: int = 64 * 1024) -> None:
    """asyncio gives every TLS connection a zero-filled, so resident, read buffer of 256 KiB
    (``asyncio.sslproto.SSLProtocol.max_size``, CPython 3.11+): 1,000 open watches held
    ~250 MB of them. TLS records are at most 16 KiB, so 64 KiB still takes several per read
    (bench/watch.py measures the RSS of 1,000 idle watchers)."""
    protocol = getattr(sslproto, "SSLProtocol", None)
    if protocol is not None and getattr(protocol, "max_size", 0) > size:
        protocol.max_size = size


def exit_by_deadline(seconds: float) -> None:
    """End the process ``seconds`` from now if the orderly shutdown has not: a query or a
    thread that does not stop must not hold the pod until the kubelet's SIGKILL."""

    def hard_exit() -> None:
        print(
            f"clusterpedia: shutdown took longer than {seconds:g}s; exiting now",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True  # still running while the interpreter joins other threads at exit
    timer.start()

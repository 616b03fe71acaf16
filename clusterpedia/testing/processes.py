"""Child processes that cannot outlive the process that started them.

Every binary the harness starts runs in its own session (so a terminal's Ctrl-C reaches only the
harness, which then stops children in order) and with ``PR_SET_PDEATHSIG=SIGKILL`` (so a harness
killed with SIGKILL still takes its children along). Linux delivers that signal when the
*thread* that forked the child exits: start processes from a long-lived thread, such as the main
thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (callers retry if it is taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """One child process with its output in a log file."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        env: Mapping[str, str] | None = None,
    ):
        self.name = name
        self.env = {**os.environ, **env} if env else None  # added to ours
        self.argv = [str(part) for part in argv]
        self.log_path = log_path
        # A system user to run as (database servers refuse root); set before the death signal,
        # which a change of user would clear.
        self.user = user if user and os.geteuid() == 0 else None
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
            env=self.env,
        )
        logger.debug("started %s (pid %s): %s", self.name, self._popen.pid, " ".join(self.argv))

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, timeout: float) -> int:
        """Wait for a child that ends by itself (a setup command); its exit code."""
        assert self._popen is not None
        code = self._popen.wait(timeout)
        self.stop()
        return code

    def kill(self) -> int | None:
        """SIGKILL at once (a crash, as far as the child can tell); reaps it; its exit code."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
        return self.stop()

    def stop(self, *, timeout: float = 15.0) -> int | None:
        """The stop signal (SIGTERM unless told), then SIGKILL after ``timeout``; always reaps
        the child; its exit code."""
        popen, self._popen = self._popen, None
        if popen is not None:
            if popen.poll() is None:
                popen.send_signal(self.stop_signal)
                try:
                    popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                    popen.kill()
                    popen.wait()
            logger.debug("%s exited with %s", self.name, popen.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None
        return popen.returncode if popen is not None else None


def child_pids(parent: int | None = None) -> list[int]:
    """PIDs of live (non-zombie) processes whose parent is ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Format: "pid (comm) state ppid ...": comm may contain spaces, so split after ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

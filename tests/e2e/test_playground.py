"""`clusterpedia playground` as a new user runs it: Ready, kubectl through the host across both
members with the kubeconfig it wrote (gets, logs and exec of a Running pod), and a clean stop
that leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from clusterpedia.testing.assets import Assets
from clusterpedia.testing.processes import pid_alive
from clusterpedia.testing.product import console_script


def _processes_under(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(directory) in (entry / "cmdline").read_text(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_playground_gets_a_new_user_to_answers(assets: Assets, tmp_path: Path) -> None:
    kubeconfig, workdir = tmp_path / "playground.kubeconfig", tmp_path / "work"
    log = (tmp_path / "playground.log").open("w")
    process = subprocess.Popen(
        [console_script(), "playground", f"--kubeconfig={kubeconfig}", f"--workdir={workdir}"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "KUBEBUILDER_ASSETS": str(assets.directory)},
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 300
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Stop with"):
                break
        assert any(line.startswith("Ready:") for line in lines), (
            "".join(lines) + (tmp_path / "playground.log").read_text()
        )
        print("".join(lines))  # the closing note shows it

        def kubectl(*args: str) -> str:
            return subprocess.run(
                [str(assets.kubectl), f"--kubeconfig={kubeconfig}", *args],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip

        pods = kubectl("--cluster", "clusterpedia", "get", "pods", "-A")
        print(pods)
        rows = [line.split() for line in pods.splitlines()[1:]]
        assert {row[1] for row in rows} == {"member-1", "member-2"}
        assert len(rows) == 12  # 3 apps x 2 pods in each member
        gadgets = kubectl("--cluster", "member-2", "get", "gadgets", "-A")
        assert gadgets.splitlines()[0].split() == ["NAMESPACE", "CLUSTER", "NAME", "COLOR", "SIZE"]
        assert "amber" in gadgets
        assert "member-1" in kubectl("--context", "playground-host", "get", "pediaclusters")
        assert "web-0" in kubectl("--context", "playground-member-1", "get", "pods", "-n", "shop")
        # kwok plays each member's node: its pods are Running, and their logs and exec reach
        # the member through Clusterpedia.
        assert "Running" in kubectl("--cluster", "member-1", "get", "pod", "-n", "shop", "web-0")
        logs = kubectl("--cluster", "member-1", "logs", "-n", "shop", "web-0")
        assert "hello from a pod of member-1" in logs
        assert (
            kubectl("--cluster", "member-1", "exec", "-n", "shop", "web-0", "--", "uname", "-s")
            == "Linux\n"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "playground.log").read_text()[-3000:]
    leftovers = [pid for pid in _processes_under(workdir) if pid_alive(pid)]
    assert leftovers == []

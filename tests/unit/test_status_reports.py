"""Which PediaCluster.status changes are patched at once and which wait (sync/status.py)."""

from __future__ import annotations

import copy
from typing import Any

from clusterpedia.sync.status import news


def status(*, phase: str = "Syncing", objects: int = 10, watches: int = 1) -> dict[str, Any]:
    return {
        "apiserver": "127.0.0.1:6443",
        "version": "v1.35.4",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": ""}],
        "watches": watches,
        "syncResources": [
            {
                "group": "",
                "resources": [
                    {
                        "name": "configmaps",
                        "kind": "ConfigMap",
                        "namespaced": True,
                        "syncConditions": [
                            {
                                "version": "v1",
                                "status": phase,
                                "initialListPhase": False,
                                "objects": objects,
                                "lastEventTime": f"2026-12-01T15:00:{objects:02d}Z",
                            }
                        ],
                    }
                ],
            }
        ],
    }


def test_the_first_status_and_real_changes_go_at_once() -> None:
    assert news(status(), None, since=0.0, progress_interval=15)
    assert news(status(phase="Error"), status(), since=0.1, progress_interval=15)
    changed = status()
    changed["conditions"][0]["status"] = "False"
    assert news(changed, status(), since=0.1, progress_interval=15)


def test_progress_alone_waits_for_its_interval() -> None:
    last = status(objects=10, watches=1)
    busier = status(objects=11, watches=2)
    assert not news(busier, last, since=1.0, progress_interval=15)
    assert news(busier, last, since=15.0, progress_interval=15)
    assert not news(copy.deepcopy(last), last, since=60.0, progress_interval=15)


def test_a_spec_the_operator_cannot_use_reads_as_the_synchro_would_write_it() -> None:
    from clusterpedia.sync.status import SynchroState, conditions

    rendered = conditions(SynchroState(invalid_config="kubeconfig is not valid YAML"))
    assert [(c["type"], c["status"], c["reason"]) for c in rendered] == [
        ("Validated", "False", "InvalidConfig"),
        ("SynchroRunning", "False", "InvalidConfig"),
        ("ClusterHealthy", "Unknown", "MonitorStop"),
        ("Ready", "False", "NotReady"),
    ]
    assert rendered[3]["message"] == "Validated condition is False, reason is InvalidConfig"
    running = conditions(SynchroState(healthy=True, running=True))
    assert [c["status"] for c in running] == ["True"] * 4


def test_the_monitor_turns_unhealthy_after_failures_in_a_row_and_healthy_at_once() -> None:
    from clusterpedia.sync.cluster_monitor import ClusterMonitor

    monitor = ClusterMonitor("m", None, None, failures_to_unhealthy=2)  # type: ignore[arg-type]
    assert [monitor.observe(ok) for ok in (True, True, False, True, False, False, False)] == [
        "healthy", None, None, None, None, "unhealthy", None,
    ]  # fmt: skip
    assert monitor.observe(True) == "healthy"

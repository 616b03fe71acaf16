"""kwok beside a real member kube-apiserver: simulated nodes and Running pods whose logs, exec,
attach and port-forward the member's own API serves (kwok answers as their kubelet).

The member must prefer nodes' InternalIP (``KWOK_MEMBER_ARGS``): kwok's nodes report
127.0.0.1 and kwok's port, where kwok serves the kubelet API over TLS. What the simulated
containers do:

- logs: every container's log is ``container.log`` in the work directory, in the CRI format
  kubelets keep (``write_log`` appends a line; ``logs -f`` follows it);
- exec: the command runs here, in the work directory, as this process's user;
- attach: the same log, followed;
- port-forward: every pod port goes to ``forward_to`` on loopback.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trustme

from clusterpedia.testing.assets import ensure_kwok, kwok_stages
from clusterpedia.testing.controlplane import APIServer
from clusterpedia.testing.processes import ManagedProcess, free_port

KWOK_MEMBER_ARGS = ("--kubelet-preferred-address-types=InternalIP",)
NODE_ANNOTATION = "kwok.x-k8s.io/node"


class KwokNodes:
    def __init__(self, member: APIServer, *, forward_to: int = 0):
        self.member = member
        self.workdir = Path(tempfile.mkdtemp(prefix=f"clusterpedia-kwok-{member.name}-"))
        self.port = free_port()
        self.forward_to = forward_to
        self.log_file = self.workdir / "container.log"
        self.log_file.write_text("")
        self.process: ManagedProcess | None = None

    def _config(self) -> Path:
        every_pod: dict[str, Any] = {}  # an empty selector: all pods kwok manages
        documents: list[dict[str, Any]] = [
            {
                "kind": "ClusterLogs",
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "metadata": {"name": "clusterpedia-tests"},
                "spec": {
                    "selector": every_pod,
                    "logs": [{"logsFile": str(self.log_file), "follow": True}],
                },
            },
            {
                "kind": "ClusterExec",
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "metadata": {"name": "clusterpedia-tests"},
                "spec": {
                    "selector": every_pod,
                    "execs": [{"local": {"workDir": str(self.workdir)}}],
                },
            },
            {
                "kind": "ClusterAttach",
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "metadata": {"name": "clusterpedia-tests"},
                "spec": {"selector": every_pod, "attaches": [{"logsFile": str(self.log_file)}]},
            },
        ]
        if self.forward_to:
            documents.append(
                {
                    "kind": "ClusterPortForward",
                    "apiVersion": "kwok.x-k8s.io/v1alpha1",
                    "metadata": {"name": "clusterpedia-tests"},
                    "spec": {
                        "selector": every_pod,
                        "forwards": [{"target": {"port": self.forward_to, "address": "127.0.0.1"}}],
                    },
                }
            )
        path = self.workdir / "kwok.yaml"
        path.write_text("\n---\n".join(json.dumps(document) for document in documents))
        return path

    def _tls(self) -> tuple[Path, Path]:
        """A serving certificate for 127.0.0.1 (kube-apiserver does not verify a kubelet's
        without --kubelet-certificate-authority, but it speaks TLS to it)."""
        issued = trustme.CA().issue_cert("127.0.0.1")
        cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        key.write_bytes(issued.private_key_pem.bytes())
        return cert, key

    def start(self) -> KwokNodes:
        kwok = ensure_kwok()
        cert, key = self._tls()
        configs = [self._config(), *kwok_stages(kwok)]
        self.process = ManagedProcess(
            name=f"kwok ({self.member.name})",
            argv=[
                kwok,
                f"--kubeconfig={self.member.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                "--node-ip=127.0.0.1",
                f"--node-port={self.port}",
                f"--server-address=127.0.0.1:{self.port}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
                *(f"--config={path}" for path in configs),
            ],
            log_path=self.workdir / "kwok.log",
        )
        self.process.start()
        return self

    def add_node(self, name: str) -> None:
        self.member.kubectl(
            "apply", "-f", "-",
            input=json.dumps({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "annotations": {NODE_ANNOTATION: "fake"}},
            }),
        )  # fmt: skip

    def add_pod(self, name: str, *, namespace: str, node: str, **labels: str) -> None:
        """A pod on ``node``, waited for until kwok reports it Running."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}],
            },
        }
        self.member.kubectl("apply", "-f", "-", input=json.dumps(pod))
        deadline = time.monotonic() + 60
        while True:
            phase = self.member.kubectl(
                "get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
            if phase == "Running":
                return
            if self.process is None or not self.process.running() or time.monotonic() > deadline:
                log = self.process.log_tail() if self.process else ""
                raise RuntimeError(f"pod {namespace}/{name} is {phase or 'not started'}:\n{log}")
            time.sleep(0.3)

    def write_log(self, line: str) -> None:
        """One line of every simulated container's log, as a kubelet writes it."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.log_file.open("a") as log:
            log.write(f"{stamp} stdout F {line}\n")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
            self.process = None

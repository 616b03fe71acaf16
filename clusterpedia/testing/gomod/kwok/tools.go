//go:build tools

// Package tools pins kwok, which simulates nodes and pods beside a real kube-apiserver and
// serves their logs, exec, attach and port-forward (the reach-through tests and playground).
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"

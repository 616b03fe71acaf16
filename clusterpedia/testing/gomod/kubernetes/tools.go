//go:build tools

// Package tools pins k8s.io/kubernetes; kube-apiserver and kubectl are built from its cmd/ packages.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)

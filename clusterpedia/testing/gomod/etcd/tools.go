//go:build tools

// Package tools pins the etcd server module; the binary is built from its main package.
package tools

import _ "go.etcd.io/etcd/server/v3"

//go:build tools

// Package tools pins helm for the tests of the Helm chart (helm lint, helm template).
package tools

import _ "helm.sh/helm/v3/cmd/helm"

//go:build tools

// Package tools pins the commands built by tools/build-tools.sh.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)

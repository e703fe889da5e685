//go:build tools

// Package tools pins the commands built by tools/build-tools.sh.
package tools

import (
	_ "github.com/rancher/local-path-provisioner"
)

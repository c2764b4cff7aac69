//go:build tools

// Package tools records what charts/build-image compiles into the registry image, so that
// `go mod tidy` keeps their dependencies in go.sum: Distribution's registry command, and the
// fallback roots that registry_roots.go.in adds to it.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "golang.org/x/crypto/x509roots/fallback"
)

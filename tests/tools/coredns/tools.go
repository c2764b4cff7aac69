//go:build tools

// Package tools records CoreDNS, the cluster DNS of the node tests (Services by name, as pods in
// a real cluster resolve them), so that `go mod tidy` keeps its dependencies in go.sum.
package tools

import _ "github.com/coredns/coredns"

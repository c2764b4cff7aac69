//go:build tools

// Package tools pins the trivy CLI at the version harbor-scanner-trivy ships with
// (its Dockerfile's TRIVY_VERSION); the adapter runs it as a subprocess.
package tools

import _ "github.com/aquasecurity/trivy/cmd/trivy"

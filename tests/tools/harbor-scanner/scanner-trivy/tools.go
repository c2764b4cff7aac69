//go:build tools

// Package tools pins harbor-scanner-trivy, the reference adapter of the Harbor Pluggable
// Scanner API v1.2 that berth's scanner-API client is exercised against.
package tools

import _ "github.com/aquasecurity/harbor-scanner-trivy/cmd/scanner-trivy"

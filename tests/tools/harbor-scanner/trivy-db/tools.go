//go:build tools

// Package tools pins trivy-db's builder at the version the pinned trivy reads, to build a
// trivy.db offline from the OSV/GHSA records under shared/scanning.
package tools

import _ "github.com/aquasecurity/trivy-db/cmd/trivy-db"

//go:build tools

// Package tools pins Google's osv-scanner, the independent reference berth's scanner is
// compared with (tests/scanning.rs, the scanning benchmark).
package tools

import _ "github.com/google/osv-scanner/v2/cmd/osv-scanner"

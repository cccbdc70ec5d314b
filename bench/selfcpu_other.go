//go:build !unix

package bench

import "time"

// selfCPU reports no figure where getrusage is missing.
func selfCPU() (time.Duration, bool) { return 0, false }

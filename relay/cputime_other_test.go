//go:build !unix

package relay

import "time"

// processCPU returns 0 where getrusage(2) is missing: no CPU metric.
func processCPU() time.Duration { return 0 }

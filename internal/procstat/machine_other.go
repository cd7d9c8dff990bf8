//go:build !linux

package procstat

import "time"

// Machine is not measured on this platform.
func Machine() time.Duration { return 0 }

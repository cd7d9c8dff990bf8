//go:build unix

// Package procstat reads this process's CPU time, for benchmarks that
// report CPU seconds beside wall time (less sensitive to a shared
// machine's load).
package procstat

import (
	"syscall"
	"time"
)

// CPU is the user+system time of this process so far.
func CPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

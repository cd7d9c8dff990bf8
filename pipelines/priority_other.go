//go:build !linux

package pipelines

import (
	"errors"
	"time"
)

// restNice is priority_linux.go's; named here for the log line.
const restNice = 10

var errNoPriority = errors.New("tokenizer priority is implemented on Linux only")

// priorityThreads runs fns as plain goroutines: no priority off Linux.
func priorityThreads(fns []func()) (tids []int, release func(), err error) {
	for _, f := range fns {
		go f()
	}
	return nil, func() {}, errNoPriority
}

func priorityError() error { return nil }

func reservedSchedstat() (onCPU, waiting time.Duration, ok bool) { return 0, 0, false }

//go:build linux

package procstat

import (
	"bytes"
	"os"
	"strconv"
	"time"
)

// Machine is the CPU time all processes of the machine have used since
// boot (user, nice, system, irq, softirq from /proc/stat; idle, iowait and
// time stolen by the hypervisor left out), or 0 if it cannot be read. A
// benchmark against a broker on the same machine sees the broker's CPU
// here, which CPU does not.
func Machine() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	return machineFromStat(b)
}

// machineFromStat parses the "cpu" line of /proc/stat: fields in USER_HZ
// ticks (100 a second on every Linux this runs on).
func machineFromStat(b []byte) time.Duration {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		n, err := strconv.ParseInt(string(f[i]), 10, 64)
		if err != nil {
			return 0
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

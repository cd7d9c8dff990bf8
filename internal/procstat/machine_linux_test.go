//go:build linux

package procstat

import (
	"testing"
	"time"
)

// The busy fields are summed, idle, iowait and steal are not, and a line
// that is not the machine total gives 0.
func TestMachineFromStat(t *testing.T) {
	stat := "cpu  100 2 30 9000 50 4 6 70 0 0\ncpu0 50 1 15 4500 25 2 3 35 0 0\n"
	if got, want := machineFromStat([]byte(stat)), 142*10*time.Millisecond; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7\n", "cpu 1 2 x 4 5 6 7\n", "cpu 1 2\n"} {
		if got := machineFromStat([]byte(bad)); got != 0 {
			t.Errorf("%q: got %v, want 0", bad, got)
		}
	}
}

// Burning CPU in this process moves the machine's counter by as much.
func TestMachineCountsThisProcess(t *testing.T) {
	before, self := Machine(), CPU()
	if before == 0 {
		t.Skip("no /proc/stat")
	}
	x := 0
	for deadline := time.Now().Add(10 * time.Second); CPU()-self < 200*time.Millisecond && time.Now().Before(deadline); {
		x++
	}
	used := CPU() - self
	// Ticks of 10 ms, counted per core: allow a few of them.
	if got := Machine() - before; got < used-50*time.Millisecond {
		t.Errorf("machine CPU rose by %v while this process used %v (x=%d)", got, used, x)
	}
}

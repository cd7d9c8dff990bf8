package train

import (
	"runtime"
	"strconv"
	"testing"
)

// The go backend runs as many graph nodes at once as there are cores (at
// most GoMLX's 8) unless the spec says otherwise.
func TestGoBackendOptionsSetExecutorsToCores(t *testing.T) {
	want := "num_executors=" + strconv.Itoa(min(8, runtime.GOMAXPROCS(0)))
	for in, out := range map[string]string{
		"":                              want,
		"ops_sequential":                want + ",ops_sequential",
		"num_executors=5":               "num_executors=5",
		"parallelism=4,num_executors=1": "parallelism=4,num_executors=1",
	} {
		if got := goBackendOptions(in); got != out {
			t.Errorf("goBackendOptions(%q) = %q, want %q", in, got, out)
		}
	}
	if _, err := NewBackend("go:num_executors=x"); err == nil {
		t.Error("go:num_executors=x: no error")
	}
}

//go:build linux

package pipelines

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// With priority and a core left over, the pool's worker runs on a thread
// of its own at the process's nice value while every other thread of the
// process is niced by restNice; a second pool reuses the reserved thread,
// still at the process's value. Without a core left over nothing is
// reniced. The checks run in a child process: the raised nice values
// cannot be lowered again without privilege, and would outlive the test.
func TestTokenizerPriorityNicesTheRest(t *testing.T) {
	if os.Getenv("EMOPIPE_PRIORITY_CHILD") == "1" {
		priorityChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTokenizerPriorityNicesTheRest$", "-test.v")
	cmd.Env = append(os.Environ(), "EMOPIPE_PRIORITY_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func priorityChild(t *testing.T) {
	runtime.GOMAXPROCS(2)
	tok := dolma2(t)
	var texts []string
	for _, d := range readSample(t) {
		texts = append(texts, string(d.Text))
	}
	want := tok.EncodeBatch(texts)
	base, err := threadNice(syscall.Gettid())
	if err != nil {
		t.Fatal(err)
	}

	// As many workers as Ps: no core left, so no priority and no renicing.
	full := newTokenPool(tok, 2, nil, true, nil)
	if len(full.threads) != 0 || full.priority != nil {
		t.Errorf("2 workers on 2 Ps: reserved threads %v (err %v), want none", full.threads, full.priority)
	}
	checkTokenPool(t, full, texts, want)
	if n := nicedThreads(t, base, nil); n != 0 {
		t.Errorf("no priority asked for: %d threads reniced", n)
	}

	p := newTokenPool(tok, 1, nil, true, nil)
	if p.priority != nil || len(p.threads) != 1 {
		t.Fatalf("1 worker on 2 Ps: threads %v, err %v; want one reserved thread", p.threads, p.priority)
	}
	worker := p.threads[0]
	cpu0, _, ok0 := reservedSchedstat()
	encodeHeld(t, p, texts, want)
	cpu1, _, ok1 := reservedSchedstat()
	checkNiced(t, base, worker)
	p.close()
	// The benchmark splits the tokenizer's time with these counters: the
	// reserved thread's CPU time grows by the tokenizing it did.
	if !ok0 || !ok1 || cpu1 <= cpu0 {
		t.Errorf("reserved threads' CPU time %v then %v (read: %v, %v): want it grown by the encoding", cpu0, cpu1, ok0, ok1)
	}

	// The next pool gets the same thread back, still at the process's value.
	q := newTokenPool(tok, 1, nil, true, nil)
	if len(q.threads) != 1 || q.threads[0] != worker || q.priority != nil {
		t.Errorf("second pool: threads %v (err %v), want the reserved %d again", q.threads, q.priority, worker)
	}
	encodeHeld(t, q, texts, want)
	checkNiced(t, base, worker)
	q.close()
	if err := priorityError(); err != nil {
		t.Errorf("renicing: %v", err)
	}
}

// encodeHeld checks the pool's ids, leaving it open.
func encodeHeld(t *testing.T, p *tokenPool, texts []string, want [][]uint32) {
	t.Helper()
	for i, ids := range p.encode(texts) {
		if !slices.Equal(ids, want[i]) {
			t.Fatalf("text %d: pool ids differ from EncodeBatch's", i)
		}
	}
}

// checkNiced, while a pool holds priority, waits for the renicer to have
// seen every thread (it runs every 100 ms), then checks that worker is at base and all others at
// base+restNice.
func checkNiced(t *testing.T, base, worker int) {
	t.Helper()
	if n, err := threadNice(worker); err != nil || n != base {
		t.Errorf("worker thread %d: nice %d (%v), want the process's %d", worker, n, err, base)
	}
	var others []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		others = others[:0]
		nicedThreads(t, base, func(tid, nice int) {
			if tid != worker && nice != min(base+restNice, 19) {
				others = append(others, fmt.Sprintf("%d at %d", tid, nice))
			}
		})
		if len(others) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(others) > 0 {
		t.Errorf("threads not niced to %d: %v", min(base+restNice, 19), others)
	}
}

// nicedThreads counts the process's threads above base, calling f (if
// not nil) with each thread's nice value.
func nicedThreads(t *testing.T, base int, f func(tid, nice int)) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		nice, err := threadNice(tid)
		if err != nil {
			continue // exited
		}
		if nice > base {
			n++
		}
		if f != nil {
			f(tid, nice)
		}
	}
	return n
}

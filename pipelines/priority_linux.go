//go:build linux

package pipelines

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Tokenizer priority (Linux). When the tokenizer goroutines are fewer than
// the cores, the spare core is meant for Kafka, Badger and the rest of the
// path; but the kernel does not know which thread is which, and whenever
// the spare core is busy it wakes the process's other threads on a
// tokenizer's core, where a woken thread runs first. The tokenizer lost
// about 5% of its time that way (docs/benchmarks.md, "Nineteenth session").
//
// With priority, each tokenizer goroutine runs locked to a thread reserved
// for it, at the process's own nice value, and every other thread of the
// process is kept at restNice more: on a shared core they get about a tenth
// of the tokenizer's share, and the spare core still takes them whenever
// it is free. SCHED_BATCH for the rest (no preemption on wake-up, same
// share) was measured too and gained nothing.
//
// Raising a thread's nice value needs no privilege; lowering it does. So
// the rest stays niced for the life of the process, and a reserved thread
// is never unlocked: it parks between pools, still at the process's nice
// value, for the next pool to use (a thread made later would inherit the
// raised value from the thread that made it).

// restNice is how much nicer than the tokenizer the rest of the process
// runs: weight 110 against 1024 on the kernel's scale.
const restNice = 10

// reservedThread is a goroutine locked to its own OS thread that runs the
// functions sent to it.
type reservedThread struct {
	tid  int
	nice int // when locked; above prio.base means it cannot give priority
	jobs chan func()
}

var prio struct {
	mu       sync.Mutex
	base     int // the process's nice value, read from the first reserved thread
	baseSet  bool
	idle     []*reservedThread
	reserved map[int]bool
	holders  int           // pools holding priority
	stop     chan struct{} // stops the renicer when holders drops to zero
	failed   error         // why the renicer could not renice; priorityError reports and clears it
}

// threadNice is tid's nice value (the raw getpriority call returns 20-nice).
func threadNice(tid int) (int, error) {
	r, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	if err != nil {
		return 0, err
	}
	return 20 - r, nil
}

// takeReserved returns an idle reserved thread, making one if none is.
// Called with prio.mu held, so that the renicer never sees a new thread
// before it is marked reserved.
func takeReserved() *reservedThread {
	if n := len(prio.idle); n > 0 {
		t := prio.idle[n-1]
		prio.idle = prio.idle[:n-1]
		return t
	}
	t := &reservedThread{jobs: make(chan func())}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: the goroutine keeps the thread for good (see above).
		runtime.LockOSThread()
		t.tid = syscall.Gettid()
		t.nice, _ = threadNice(t.tid)
		close(ready)
		for f := range t.jobs {
			f()
		}
	}()
	<-ready
	if prio.reserved == nil {
		prio.reserved = map[int]bool{}
	}
	prio.reserved[t.tid] = true
	if !prio.baseSet {
		prio.base, prio.baseSet = t.nice, true
	}
	return t
}

// priorityThreads runs each of fns on a reserved thread of its own and
// keeps the rest of the process niced until release is called. It returns
// the threads' ids, and an error (the functions run all the same) when
// priority could not be had: a thread already niced, or no renicing
// allowed.
func priorityThreads(fns []func()) (tids []int, release func(), err error) {
	prio.mu.Lock()
	threads := make([]*reservedThread, len(fns))
	for i := range fns {
		threads[i] = takeReserved()
		tids = append(tids, threads[i].tid)
		if threads[i].nice > prio.base && err == nil {
			err = fmt.Errorf("thread %d is already at nice %d (the process's is %d)", threads[i].tid, threads[i].nice, prio.base)
		}
	}
	prio.holders++
	if prio.holders == 1 {
		prio.stop = make(chan struct{})
		go renice(prio.stop)
	}
	prio.mu.Unlock()
	// back counts the threads not yet idle again: release waits for them,
	// so that the next pool finds them (a thread made instead would be
	// niced).
	var back sync.WaitGroup
	back.Add(len(fns))
	for i, f := range fns {
		t := threads[i]
		t.jobs <- func() {
			f()
			prio.mu.Lock()
			prio.idle = append(prio.idle, t)
			prio.mu.Unlock()
			back.Done()
		}
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			back.Wait()
			prio.mu.Lock()
			defer prio.mu.Unlock()
			if prio.holders--; prio.holders == 0 {
				close(prio.stop)
			}
		})
	}
	return tids, release, err
}

// renice raises the nice value of every thread of the process but the
// reserved ones to base+restNice, now and every 100 ms until stop: the Go
// runtime starts threads when it needs them.
func renice(stop chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		reniceOnce()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func reniceOnce() {
	prio.mu.Lock()
	defer prio.mu.Unlock()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		prio.failed = err
		return
	}
	target := min(prio.base+restNice, 19) // the kernel's largest
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || prio.reserved[tid] {
			continue
		}
		if n, err := threadNice(tid); err != nil || n >= target {
			continue // gone, or niced already
		}
		// ESRCH: the thread has exited meanwhile.
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, target); err != nil && err != syscall.ESRCH && prio.failed == nil {
			prio.failed = fmt.Errorf("renice thread %d: %w", tid, err)
		}
	}
}

// priorityError reports a renicing failure, once.
func priorityError() error {
	prio.mu.Lock()
	defer prio.mu.Unlock()
	err := prio.failed
	prio.failed = nil
	return err
}

// reservedSchedstat sums the kernel's counters of the reserved threads:
// time on a CPU and time runnable but waiting for one
// (/proc/PID/task/TID/schedstat). ok is false when there are none or the
// counters cannot be read.
func reservedSchedstat() (onCPU, waiting time.Duration, ok bool) {
	prio.mu.Lock()
	tids := make([]int, 0, len(prio.reserved))
	for tid := range prio.reserved {
		tids = append(tids, tid)
	}
	prio.mu.Unlock()
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
		if err != nil {
			return 0, 0, false
		}
		var run, wait int64
		if _, err := fmt.Sscan(string(b), &run, &wait); err != nil {
			return 0, 0, false
		}
		onCPU += time.Duration(run)
		waiting += time.Duration(wait)
	}
	return onCPU, waiting, len(tids) > 0
}

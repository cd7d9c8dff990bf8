package pipelines

import (
	"runtime"
	"sync"
	"time"

	"github.com/emopipe/emopipe/tokenize"
)

// tokenPool tokenizes for every partition of an ingester on a fixed number
// of goroutines (GOMAXPROCS unless set), first come first served. Each call's texts are cut into
// small chunks, so the cores stay busy while any partition has text
// waiting (one EncodeBatch per partition at a time left a core idle at the
// end of each batch), and the call that came first finishes first.
type tokenPool struct {
	tok     *tokenize.Tokenizer
	chunks  chan tokenChunk
	wg      sync.WaitGroup
	workers int
	// m counts the wall time the workers spend holding a chunk, summed
	// (emopipe_ingest_tokenizer_busy_seconds_total). Against workers ×
	// elapsed it says whether the tokenizer ever waited for text, i.e.
	// whether the rest of the path held it back. May be nil.
	m *Metrics
	// pretokenized, when set, gives the ids of the texts it holds
	// (IngestConfig.pretokenized).
	pretokenized map[string][]uint32
	// threads are the workers' reserved threads when they run with
	// priority (priority_linux.go); release gives the priority up.
	threads  []int
	release  func()
	priority error // why priority was asked for and not had; nil if had or not asked
}

// tokenChunk is texts[lo:hi] of one encode call; done counts the call's
// unfinished chunks.
type tokenChunk struct {
	texts  []string
	out    [][]uint32
	lo, hi int
	done   *sync.WaitGroup
}

// chunkBytes bounds a chunk: small enough to balance the workers, large
// enough that handing chunks over costs nothing.
const chunkBytes = 64 << 10

// newTokenPool starts workers goroutines (≤ 0: GOMAXPROCS), counting
// their busy time in m (nil: not counted). With priority, and fewer
// workers than GOMAXPROCS, they run on threads reserved for them and the
// rest of the process is niced (priority_linux.go).
func newTokenPool(tok *tokenize.Tokenizer, workers int, m *Metrics, priority bool, pretokenized map[string][]uint32) *tokenPool {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	p := &tokenPool{tok: tok, chunks: make(chan tokenChunk, 1024), workers: workers, m: m, pretokenized: pretokenized, release: func() {}}
	p.wg.Add(workers)
	if !prioritized(priority, workers) {
		for range workers {
			go p.work()
		}
		return p
	}
	fns := make([]func(), workers)
	for i := range fns {
		fns[i] = p.work
	}
	p.threads, p.release, p.priority = priorityThreads(fns)
	return p
}

// prioritized says whether workers tokenizer goroutines get priority when
// it is asked for: only with a core left over for the rest.
func prioritized(asked bool, workers int) bool {
	return asked && workers < runtime.GOMAXPROCS(0)
}

func (p *tokenPool) work() {
	defer p.wg.Done()
	enc := p.tok.NewEncoder()
	defer enc.Close()
	for c := range p.chunks {
		t0 := time.Now()
		for i := c.lo; i < c.hi; i++ {
			if ids, ok := p.pretokenized[c.texts[i]]; ok {
				c.out[i] = ids
				continue
			}
			c.out[i] = enc.Encode(c.texts[i])
		}
		p.m.Add("emopipe_ingest_tokenizer_busy_seconds_total", time.Since(t0).Seconds())
		c.done.Done()
	}
}

// encode returns the ids of each text, as EncodeBatch does.
func (p *tokenPool) encode(texts []string) [][]uint32 {
	out := make([][]uint32, len(texts))
	var done sync.WaitGroup
	for lo := 0; lo < len(texts); {
		hi, n := lo, 0
		for hi < len(texts) && (hi == lo || n+len(texts[hi]) <= chunkBytes) {
			n += len(texts[hi])
			hi++
		}
		done.Add(1)
		p.chunks <- tokenChunk{texts: texts, out: out, lo: lo, hi: hi, done: &done}
		lo = hi
	}
	done.Wait()
	return out
}

// close stops the workers once every call has returned.
func (p *tokenPool) close() {
	close(p.chunks)
	p.wg.Wait()
	p.release()
}

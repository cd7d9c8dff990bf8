package pipelines

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// The pool gives EncodeBatch's ids, also with several partitions calling
// at once, for texts of every size (empty, under and over a chunk).
func TestTokenPoolMatchesEncodeBatch(t *testing.T) {
	tok := dolma2(t)
	var texts []string
	for _, d := range readSample(t) {
		texts = append(texts, string(d.Text))
	}
	texts = append(texts, "", " ", string(make([]byte, chunkBytes+1)))
	want := tok.EncodeBatch(texts)
	for _, workers := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) { checkTokenPool(t, newTokenPool(tok, workers, nil, false, nil), texts, want) })
	}
}

func checkTokenPool(t *testing.T, p *tokenPool, texts []string, want [][]uint32) {
	defer p.close()
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := texts[c*len(texts)/4 : (c+1)*len(texts)/4]
			got := p.encode(part)
			for i := range part {
				if !slices.Equal(got[i], want[c*len(texts)/4+i]) {
					t.Errorf("text %d: pool ids differ from EncodeBatch's", c*len(texts)/4+i)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// The busy time is the workers' time with text in hand: none while the
// pool waits, and, for one worker kept fed by one call, most of the call
// (never more than it).
func TestTokenPoolCountsBusyTime(t *testing.T) {
	tok := dolma2(t)
	var texts []string
	for _, d := range readSample(t) {
		texts = append(texts, string(d.Text))
	}
	m := NewMetrics()
	p := newTokenPool(tok, 1, m, false, nil)
	defer p.close()
	time.Sleep(20 * time.Millisecond)
	if got := m.Get("emopipe_ingest_tokenizer_busy_seconds_total"); got != 0 {
		t.Fatalf("idle pool counted %v s busy", got)
	}
	t0 := time.Now()
	p.encode(texts)
	wall := time.Since(t0).Seconds()
	busy := m.Get("emopipe_ingest_tokenizer_busy_seconds_total")
	if busy > wall || busy < wall/2 {
		t.Errorf("busy %.4f s for a call of %.4f s on one worker: want between half of it and all of it", busy, wall)
	}
}

// With ids given beforehand (the benchmark's data path alone), the pool
// hands those out for the texts they cover and tokenizes the rest.
func TestTokenPoolHandsOutPretokenizedIDs(t *testing.T) {
	tok := dolma2(t)
	texts := []string{"given beforehand", "tokenized here"}
	given := []uint32{7, 7, 7}
	p := newTokenPool(tok, 1, nil, false, map[string][]uint32{texts[0]: given})
	defer p.close()
	got := p.encode(texts)
	if !slices.Equal(got[0], given) {
		t.Errorf("pretokenized text: ids %v, want the given %v", got[0], given)
	}
	if want := tok.Encode(texts[1]); !slices.Equal(got[1], want) {
		t.Errorf("other text: ids %v, want the tokenizer's %v", got[1], want)
	}
}

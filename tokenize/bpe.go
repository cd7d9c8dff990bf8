package tokenize

import (
	"math"
	"math/bits"
)

// noRank marks "no merge for this pair".
const noRank = math.MaxUint32

// pairTable maps a symbol pair (left id, right id) to its merge rank and the merged
// id. Open addressing with linear probing over 16-byte slots: the merge loop does one
// lookup per candidate pair, and a Go map with a struct key costs several times more.
type pairTable struct {
	slots []pairSlot
	shift uint8
	n     int
}

type pairSlot struct {
	key  uint64 // left<<32 | right; emptyKey when unused
	rank uint32
	id   uint32
}

const emptyKey = math.MaxUint64

func newPairTable(n int) pairTable {
	size := 1 << bits.Len(uint(2*n+16))
	t := pairTable{slots: make([]pairSlot, size), shift: uint8(64 - bits.TrailingZeros(uint(size)))}
	for i := range t.slots {
		t.slots[i].key = emptyKey
	}
	return t
}

func pairKey(a, b uint32) uint64 { return uint64(a)<<32 | uint64(b) }

func (t *pairTable) index(key uint64) int {
	return int((key * 0x9E3779B97F4A7C15) >> t.shift)
}

// put inserts or overwrites; a later duplicate merge wins, as when Hugging Face
// collects merges into a HashMap.
func (t *pairTable) put(a, b, rank, id uint32) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	key := pairKey(a, b)
	mask := len(t.slots) - 1
	for i := t.index(key); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == key {
			s.rank, s.id = rank, id
			return
		}
		if s.key == emptyKey {
			*s = pairSlot{key: key, rank: rank, id: id}
			t.n++
			return
		}
	}
}

func (t *pairTable) grow() {
	old := t.slots
	*t = newPairTable(2 * len(old))
	for _, s := range old {
		if s.key != emptyKey {
			t.put(uint32(s.key>>32), uint32(s.key), s.rank, s.id)
		}
	}
}

// get returns the rank and merged id of pair (a, b), or noRank.
func (t *pairTable) get(a, b uint32) (rank, id uint32) {
	key := pairKey(a, b)
	mask := len(t.slots) - 1
	for i := t.index(key); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == key {
			return s.rank, s.id
		}
		if s.key == emptyKey {
			return noRank, 0
		}
	}
}

// bpeScratch holds reusable buffers for one goroutine.
type bpeScratch struct {
	syms  []uint32
	ranks []uint32
	prev  []int32
	next  []int32
	heap  []uint64
}

// shortWord is the length up to which the quadratic merge loop beats the heap.
const shortWord = 48

// bpe appends the ids of the byte-level BPE encoding of word. The merge order is the
// one Hugging Face's Word::merge_all produces: repeatedly the pair with the lowest
// merge rank, leftmost among equal ranks (equal ranks only occur for equal pairs).
func (m *model) bpe(dst []uint32, word string, sc *bpeScratch) []uint32 {
	if len(word) > shortWord {
		return m.bpeHeap(dst, word, sc)
	}
	return m.bpeShort(dst, word, sc)
}

// bpeShort rescans the pair ranks after each merge: O(n²), but for the short words
// that dominate text it beats maintaining a heap.
func (m *model) bpeShort(dst []uint32, word string, sc *bpeScratch) []uint32 {
	syms := sc.syms[:0]
	for i := 0; i < len(word); i++ {
		syms = append(syms, m.byteID[word[i]])
	}
	ranks := sc.ranks[:0]
	for i := 0; i+1 < len(syms); i++ {
		r, _ := m.pairs.get(syms[i], syms[i+1])
		ranks = append(ranks, r)
	}
	for len(syms) > 1 {
		best, bi := uint32(noRank), -1
		for i, r := range ranks {
			if r < best {
				best, bi = r, i
			}
		}
		if bi < 0 {
			break
		}
		_, id := m.pairs.get(syms[bi], syms[bi+1])
		syms[bi] = id
		syms = append(syms[:bi+1], syms[bi+2:]...)
		ranks = append(ranks[:bi], ranks[bi+1:]...)
		if bi < len(ranks) {
			ranks[bi], _ = m.pairs.get(id, syms[bi+1])
		}
		if bi > 0 {
			ranks[bi-1], _ = m.pairs.get(syms[bi-1], id)
		}
	}
	sc.syms, sc.ranks = syms, ranks
	return append(dst, syms...)
}

// bpeHeap is bpe for long words: a doubly linked list of symbols and a min-heap of
// rank<<32|position, with stale entries skipped on pop, like Hugging Face's Word.
func (m *model) bpeHeap(dst []uint32, word string, sc *bpeScratch) []uint32 {
	n := len(word)
	syms := grow(sc.syms, n)
	prev := grow(sc.prev, n)
	next := grow(sc.next, n)
	h := sc.heap[:0]
	for i := 0; i < n; i++ {
		syms[i] = m.byteID[word[i]]
		prev[i], next[i] = int32(i-1), int32(i+1)
	}
	next[n-1] = -1
	for i := 0; i+1 < n; i++ {
		if r, _ := m.pairs.get(syms[i], syms[i+1]); r != noRank {
			h = heapPush(h, uint64(r)<<32|uint64(i))
		}
	}
	for len(h) > 0 {
		var top uint64
		top, h = heapPop(h)
		rank, pos := uint32(top>>32), int32(uint32(top))
		if syms[pos] == math.MaxUint32 || next[pos] < 0 {
			continue // removed, or last symbol
		}
		right := next[pos]
		r, id := m.pairs.get(syms[pos], syms[right])
		if r != rank {
			continue // stale: the pair at pos changed since it was queued
		}
		syms[pos] = id
		syms[right] = math.MaxUint32
		next[pos] = next[right]
		if nn := next[right]; nn >= 0 {
			prev[nn] = pos
		}
		if p := prev[pos]; p >= 0 {
			if r, _ := m.pairs.get(syms[p], id); r != noRank {
				h = heapPush(h, uint64(r)<<32|uint64(p))
			}
		}
		if nn := next[pos]; nn >= 0 {
			if r, _ := m.pairs.get(id, syms[nn]); r != noRank {
				h = heapPush(h, uint64(r)<<32|uint64(pos))
			}
		}
	}
	for i := int32(0); i >= 0; i = next[i] {
		dst = append(dst, syms[i])
	}
	sc.syms, sc.prev, sc.next, sc.heap = syms, prev, next, h
	return dst
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/2)
	}
	return s[:n]
}

func heapPush(h []uint64, v uint64) []uint64 {
	h = append(h, v)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if h[p] <= v {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = v
	return h
}

func heapPop(h []uint64) (uint64, []uint64) {
	top := h[0]
	last := h[len(h)-1]
	h = h[:len(h)-1]
	n := len(h)
	if n == 0 {
		return top, h
	}
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && h[c+1] < h[c] {
			c++
		}
		if last <= h[c] {
			break
		}
		h[i] = h[c]
		i = c
	}
	h[i] = last
	return top, h
}

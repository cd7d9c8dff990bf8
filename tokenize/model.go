package tokenize

import (
	"fmt"
	"sort"
)

// merge is one BPE merge; its rank is its index in model.merges.
type merge struct{ left, right, id uint32 }

// model is a byte-level BPE model: Hugging Face's BPE with every byte in the vocabulary,
// so unk_token, byte_fallback and fuse_unk never come into play.
type model struct {
	byteID       [256]uint32 // id of each single byte
	pairs        pairTable
	merges       []merge // rank order
	ignoreMerges bool
	// vocab maps raw token bytes to ids; built only when ignoreMerges needs it.
	vocab map[string]uint32

	size   int      // largest model id + 1
	has    []bool   // id is in the model vocabulary
	tok    []byte   // raw bytes of byte-level tokens, indexed by tokOff
	tokOff []uint32 // len size+1
	// odd holds vocabulary entries with runes outside the byte-level alphabet (e.g.
	// special tokens listed in the model vocab). BPE can never produce them.
	odd map[uint32]string
}

var bl = newByteLevel()

// newModelFromStrings builds a model from a tokenizer.json vocab and merges (rank order).
func newModelFromStrings(vocab map[string]uint32, merges [][2]string, ignoreMerges bool) (*model, error) {
	m := &model{ignoreMerges: ignoreMerges, odd: map[uint32]string{}}
	type entry struct {
		id  uint32
		raw []byte
		str string
	}
	entries := make([]entry, 0, len(vocab))
	for s, id := range vocab {
		raw, ok := bl.decode(s)
		if !ok {
			raw = nil
		}
		entries = append(entries, entry{id, raw, s})
		m.size = max(m.size, int(id)+1)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].id < entries[j].id })
	m.has = make([]bool, m.size)
	m.tokOff = make([]uint32, m.size+1)
	for i, e := range entries {
		if i > 0 && entries[i-1].id == e.id {
			return nil, fmt.Errorf("model.vocab: id %d is used by both %q and %q", e.id, entries[i-1].str, e.str)
		}
	}
	k := 0
	for id := 0; id < m.size; id++ {
		m.tokOff[id] = uint32(len(m.tok))
		if k < len(entries) && int(entries[k].id) == id {
			e := entries[k]
			k++
			m.has[id] = true
			if e.raw != nil {
				m.tok = append(m.tok, e.raw...)
			} else {
				m.odd[uint32(id)] = e.str
			}
		}
	}
	m.tokOff[m.size] = uint32(len(m.tok))
	for b := 0; b < 256; b++ {
		id, ok := vocab[string(bl.toRune[b])]
		if !ok {
			return nil, &UnsupportedError{Field: "model.vocab", Detail: fmt.Sprintf(
				"byte 0x%02X (%q) is not in the vocabulary; only byte-level BPE with all 256 bytes is supported", b, string(bl.toRune[b]))}
		}
		m.byteID[b] = id
	}
	m.pairs = newPairTable(len(merges))
	m.merges = make([]merge, 0, len(merges))
	for rank, mg := range merges {
		a, okA := vocab[mg[0]]
		b, okB := vocab[mg[1]]
		c, okC := vocab[mg[0]+mg[1]]
		switch {
		case !okA:
			return nil, fmt.Errorf("model.merges[%d]: %q is not in the vocabulary", rank, mg[0])
		case !okB:
			return nil, fmt.Errorf("model.merges[%d]: %q is not in the vocabulary", rank, mg[1])
		case !okC:
			return nil, fmt.Errorf("model.merges[%d]: %q is not in the vocabulary", rank, mg[0]+mg[1])
		}
		m.pairs.put(a, b, uint32(rank), c)
		m.merges = append(m.merges, merge{a, b, c})
	}
	m.dropShadowedMerges()
	m.buildVocab()
	return m, nil
}

// dropShadowedMerges removes earlier duplicates of a pair (the later rank won in the
// table, as in HF), so m.merges lists exactly the effective merges in rank order.
func (m *model) dropShadowedMerges() {
	if m.pairs.n == len(m.merges) {
		return
	}
	kept := m.merges[:0]
	for rank, mg := range m.merges {
		if r, _ := m.pairs.get(mg.left, mg.right); int(r) == rank {
			kept = append(kept, mg)
		}
	}
	// Re-rank so that a merge's rank is again its index.
	m.merges = kept
	m.pairs = newPairTable(len(kept))
	for rank, mg := range kept {
		m.pairs.put(mg.left, mg.right, uint32(rank), mg.id)
	}
}

func (m *model) buildVocab() {
	if !m.ignoreMerges {
		return
	}
	m.vocab = make(map[string]uint32, m.size)
	for id := 0; id < m.size; id++ {
		if raw, ok := m.tokenBytes(uint32(id)); ok {
			m.vocab[string(raw)] = uint32(id)
		}
	}
}

// tokenBytes returns the raw bytes of a byte-level model token.
func (m *model) tokenBytes(id uint32) ([]byte, bool) {
	if int(id) >= m.size || !m.has[id] {
		return nil, false
	}
	if _, odd := m.odd[id]; odd {
		return nil, false
	}
	return m.tok[m.tokOff[id]:m.tokOff[id+1]], true
}

// tokenString returns the vocabulary string of a model token.
func (m *model) tokenString(id uint32) (string, bool) {
	if int(id) >= m.size || !m.has[id] {
		return "", false
	}
	if s, odd := m.odd[id]; odd {
		return s, true
	}
	return bl.encode(m.tok[m.tokOff[id]:m.tokOff[id+1]]), true
}

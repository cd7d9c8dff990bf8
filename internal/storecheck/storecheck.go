// Package storecheck reads back everything a store holds about documents,
// for tests that must prove "every document exactly once, with its exact
// tokens": the spans of committed sequences plus the unfinished packer
// tails kept in source states.
package storecheck

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
)

// Contents is what one store holds.
type Contents struct {
	// Tokens per document key, EOS included, reassembled in order.
	Tokens map[string][]uint32
	// Records are the accepted-document records.
	Records map[string]store.DocRecord
	// InTail counts documents (partly) held only in unfinished tails.
	InTail int
	// Staged counts batches awaiting their commit point.
	Staged int
}

// Read collects a store's documents. It fails on any document that starts
// twice or whose spans do not chain.
func Read(st *store.Store) (*Contents, error) {
	c := &Contents{Tokens: map[string][]uint32{}, Records: map[string]store.DocRecord{}}
	open := map[string]bool{}
	started := map[string]bool{}
	add := func(s *packing.Sequence, where string) error {
		for _, sp := range s.Spans {
			if sp.ContinuesFromPrev != open[sp.DocKey] {
				return fmt.Errorf("%s: span of %q: continues-from-previous=%v, but the document's previous span said continues=%v", where, sp.DocKey, sp.ContinuesFromPrev, open[sp.DocKey])
			}
			if !sp.ContinuesFromPrev {
				if started[sp.DocKey] {
					return fmt.Errorf("%s: document %q starts twice", where, sp.DocKey)
				}
				started[sp.DocKey] = true
			}
			c.Tokens[sp.DocKey] = append(c.Tokens[sp.DocKey], s.Tokens[sp.Start:sp.Start+sp.Length]...)
			open[sp.DocKey] = sp.ContinuesInNext
		}
		return nil
	}
	err := st.Scan(0, func(n uint64, s *packing.Sequence) error { return add(s, fmt.Sprintf("sequence %d", n)) })
	if err != nil {
		return nil, err
	}
	srcs, err := st.Sources()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(srcs))
	for n := range srcs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		var state struct {
			Tail []byte `json:"tail"`
		}
		if json.Unmarshal(srcs[name], &state) != nil || len(state.Tail) == 0 {
			continue
		}
		p, err := packing.New(st.Header().PackingConfig())
		if err != nil {
			return nil, err
		}
		if err := p.UnmarshalState(state.Tail); err != nil {
			return nil, fmt.Errorf("tail of %s: %w", name, err)
		}
		for _, s := range p.Flush() {
			for _, sp := range s.Spans {
				if !sp.ContinuesFromPrev {
					c.InTail++
				}
			}
			if err := add(&s, "tail of "+name); err != nil {
				return nil, err
			}
		}
	}
	for k, o := range open {
		if o {
			return nil, fmt.Errorf("document %q is cut off: its last span says it continues", k)
		}
	}
	err = st.Docs(func(d store.DocRecord) error {
		c.Records[d.Key] = d
		return nil
	})
	if err != nil {
		return nil, err
	}
	staged, err := st.Staged()
	c.Staged = len(staged)
	return c, err
}

// ReadDir opens a store read-only and reads it.
func ReadDir(dir string) (*Contents, error) {
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return Read(st)
}

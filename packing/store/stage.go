package store

import (
	"bytes"
	"encoding/gob"
	"fmt"

	"github.com/emopipe/emopipe/packing"
)

// Staging supports a commit point outside the store. A Kafka ingester
// cannot commit its store and its consumer-group offset atomically, so it
// makes the group offset the commit point:
//
//  1. stage: write the batch under the partition's staging key (nothing
//     visible: no sequence numbers, stats or documents yet);
//  2. commit the offset to Kafka;
//  3. finalize: commit the batch for real and delete the staged copy in
//     one transaction — or, if the offset commit failed, delete it.
//
// After a crash, a staged batch is finalized when Kafka's committed offset
// has reached the batch's end and discarded otherwise, so the store and
// the group agree on every record exactly once, also when another group
// member takes the partition over.

// staged is the JSON form of a staged batch.
type staged struct {
	Sequences [][]byte    `json:"sequences"`
	Docs      []stagedDoc `json:"docs"`
	Rejects   []Reject    `json:"rejects"`
	Source    string      `json:"source"`
	State     []byte      `json:"state"`
	// End is the source position the batch reaches (a Kafka offset).
	End int64 `json:"end"`
	// Token identifies the commit that makes the batch final (it travels
	// as the Kafka offset commit's metadata).
	Token string `json:"token"`
}

type stagedDoc struct {
	Key string `json:"key"`
	DocRecord
}

// EncodeStaged serialises a single-source batch for staging.
func EncodeStaged(b *Batch, source string, end int64, token string) ([]byte, error) {
	st := staged{Rejects: b.Rejects, Source: source, State: b.Sources[source], End: end, Token: token}
	for i := range b.Sequences {
		enc, err := b.Sequences[i].MarshalBinary()
		if err != nil {
			return nil, err
		}
		st.Sequences = append(st.Sequences, enc)
	}
	for _, d := range b.Docs {
		st.Docs = append(st.Docs, stagedDoc{Key: d.Key, DocRecord: d})
	}
	var buf bytes.Buffer
	// gob, not JSON: staged batches are written on every Kafka commit, and
	// base64-in-JSON of megabytes of tokens cost more than the store write.
	if err := gob.NewEncoder(&buf).Encode(st); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Staged is a decoded staged batch.
type Staged struct {
	Batch  *Batch
	Source string
	End    int64
	Token  string
}

// DecodeStaged restores a staged batch.
func DecodeStaged(raw []byte) (Staged, error) {
	var st staged
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&st); err != nil {
		return Staged{}, fmt.Errorf("staged batch: %w", err)
	}
	b := &Batch{Rejects: st.Rejects, Sources: map[string][]byte{st.Source: st.State}}
	for _, enc := range st.Sequences {
		var s packing.Sequence
		if err := s.UnmarshalBinary(enc); err != nil {
			return Staged{}, fmt.Errorf("staged batch: %w", err)
		}
		b.Sequences = append(b.Sequences, s)
	}
	for _, d := range st.Docs {
		rec := d.DocRecord
		rec.Key = d.Key
		b.Docs = append(b.Docs, rec)
	}
	return Staged{Batch: b, Source: st.Source, End: st.End, Token: st.Token}, nil
}

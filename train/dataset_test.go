package train

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing/store"
)

// Inputs are seq[:-1], labels seq[1:] with IgnoreLabel at padding;
// segments follow the spans (or the reference's EOS rule, padding kept at
// -1); the same cursor gives the same batches.
func TestDatasetBatches(t *testing.T) {
	dir := synthStore(t, filepath.Join(t.TempDir(), "s"), 30, 33, 64, 5)
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eos := int32(st.Header().EOS)
	cur := store.Cursor{Seed: 11, Shuffle: true}
	for _, mode := range []string{SegmentsSpans, SegmentsEOS} {
		ds, err := NewDataset(st, cur, DatasetOptions{Segments: mode, AttnSegments: mode, Domains: true})
		if err != nil {
			t.Fatal(err)
		}
		b, err := ds.Next(12)
		if err != nil {
			t.Fatal(err)
		}
		padded := 0
		for r := range b.Rows() {
			seq, _ := st.Sequence(b.Seqs[r])
			full := seq.Segments()
			for p := range 32 {
				if b.Tokens[r][p] != int32(seq.Tokens[p]) {
					t.Fatalf("row %d pos %d: token %d, stored %d", r, p, b.Tokens[r][p], seq.Tokens[p])
				}
				want := int32(seq.Tokens[p+1])
				if full[p] < 0 || full[p+1] < 0 {
					want = model.IgnoreLabel
					padded++
				}
				if b.Labels[r][p] != want {
					t.Fatalf("row %d pos %d: label %d, want %d", r, p, b.Labels[r][p], want)
				}
				if full[p] >= 0 && b.Domains[r][p] != seq.Spans[full[p]].Domain {
					t.Fatalf("row %d pos %d: domain %q", r, p, b.Domains[r][p])
				}
			}
			want := full[:32]
			if mode == SegmentsEOS {
				want = model.SegmentsFromEOS([][]int32{b.Tokens[r]}, eos)[0]
				keepPadding(want, full)
				wantDocs := model.DocumentsFromEOS([][]int32{b.Tokens[r]}, eos)[0]
				keepPadding(wantDocs, full)
				if !reflect.DeepEqual(b.AttnSegments[r], wantDocs) {
					t.Fatalf("row %d: attention documents %v, want %v", r, b.AttnSegments[r], wantDocs)
				}
			} else if b.AttnSegments != nil {
				t.Fatal("spans mode: attention documents should default to the router segments (nil)")
			}
			if !reflect.DeepEqual(b.Segments[r], want) {
				t.Fatalf("%s row %d: segments %v, want %v", mode, r, b.Segments[r], want)
			}
		}
		if padded == 0 {
			t.Fatal("no padding in the batch: the label masking went untested")
		}
		again, _ := NewDataset(st, cur, DatasetOptions{Segments: mode, AttnSegments: mode, Domains: true})
		b2, _ := again.Next(12)
		if !reflect.DeepEqual(b, b2) {
			t.Fatalf("%s: same cursor, different batch", mode)
		}
	}
}

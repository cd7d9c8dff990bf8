package model

import (
	"fmt"

	"github.com/gomlx/gomlx/core/tensors"
)

// PaddingSegment marks padding positions in Inputs.Segments (and
// Inputs.AttnSegments). Padding is routed (shapes are static) but left out of
// pools, load statistics and every loss. It equals packing's padding value.
const PaddingSegment = -1

// IgnoreLabel marks positions of Inputs.Labels that add no loss.
const IgnoreLabel = -1

// SegmentsFromEOS reproduces the reference router's segmentation
// (emo-method.md §2): per row, segment boundaries are the positions p > 0
// holding eos, and the EOS token starts the next segment. seg[b][p] is the
// number of EOS tokens at positions 1..p. A row holds at most len(row)
// segments, so the ids fit Inputs.PoolSizes with nseg = sequence length.
func SegmentsFromEOS(ids [][]int32, eos int32) [][]int32 {
	out := make([][]int32, len(ids))
	for b, row := range ids {
		seg := make([]int32, len(row))
		var n int32
		for p, id := range row {
			if p > 0 && id == eos {
				n++
			}
			seg[p] = n
		}
		out[b] = seg
	}
	return out
}

// DocumentsFromEOS is the reference's attention-side segmentation: an EOS
// ends its document (it is counted in the preceding one), so doc[b][p] is the
// number of EOS tokens at positions 0..p-1. Use it as Inputs.AttnSegments to
// reproduce the reference's intra-document attention with EOS segmentation.
func DocumentsFromEOS(ids [][]int32, eos int32) [][]int32 {
	out := make([][]int32, len(ids))
	for b, row := range ids {
		doc := make([]int32, len(row))
		var n int32
		for p, id := range row {
			doc[p] = n
			if id == eos {
				n++
			}
		}
		out[b] = doc
	}
	return out
}

// Int32Tensor packs equal-length rows into a [len(rows), len(rows[0])] int32
// tensor (tokens, segments, labels).
func Int32Tensor(rows [][]int32) (*tensors.Tensor, error) {
	if len(rows) == 0 || len(rows[0]) == 0 {
		return nil, fmt.Errorf("model: empty rows")
	}
	s := len(rows[0])
	flat := make([]int32, 0, len(rows)*s)
	for i, r := range rows {
		if len(r) != s {
			return nil, fmt.Errorf("model: row %d has %d positions, row 0 has %d", i, len(r), s)
		}
		flat = append(flat, r...)
	}
	return tensors.FromFlatDataAndDimensions(flat, len(rows), s), nil
}

// ExpertMask builds an Inputs.ExpertMask tensor [NLayers, E'] from per-layer
// lists of kept routable expert indices (the shared expert is always kept and
// is not listed). A nil list keeps every expert of that layer. A list may
// keep fewer experts than k' (at least one): the extra top-k' slots then
// pick masked experts with gate 0, which equals the pruned model with
// top_k = K (PruneConfig), as the reference prunes; the load-balancing loss
// of such a subset is not meaningful (do not train with it).
func (c Config) ExpertMask(keep [][]int) (*tensors.Tensor, error) {
	if len(keep) != c.NLayers {
		return nil, fmt.Errorf("model: expert subset has %d layers, config has %d", len(keep), c.NLayers)
	}
	ep := c.RoutableExperts()
	flat := make([]bool, c.NLayers*ep)
	for l, list := range keep {
		if list == nil {
			for e := range ep {
				flat[l*ep+e] = true
			}
			continue
		}
		if len(list) == 0 {
			return nil, fmt.Errorf("model: layer %d keeps no routable expert", l)
		}
		for _, e := range list {
			if e < 0 || e >= ep {
				return nil, fmt.Errorf("model: layer %d: expert %d is not routable (E'=%d)", l, e, ep)
			}
			flat[l*ep+e] = true
		}
	}
	return tensors.FromFlatDataAndDimensions(flat, c.NLayers, ep), nil
}

package store

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"math/rand/v2"

	"github.com/emopipe/emopipe/packing"
)

// Cursor is a Reader's position. It is small, JSON-serialisable, and saved
// with trainer state so that a resumed run reads exactly the sequences the
// uninterrupted run would have.
type Cursor struct {
	// Seed fixes the shuffled order. Shuffle off reads in store order.
	Seed    uint64 `json:"seed"`
	Shuffle bool   `json:"shuffle"`
	// Epoch counts completed passes. EpochSize is the number of sequences
	// the current pass covers: the store's size when the pass began (a
	// growing store's new sequences join the next pass).
	Epoch     uint64 `json:"epoch"`
	EpochSize uint64 `json:"epoch_size"`
	// Pos is the index of the next sequence within the pass.
	Pos uint64 `json:"pos"`
	// Follow reads a growing store once, in commit order, as a stream:
	// Pos is then the number of the next sequence, and a Reader that has
	// caught up returns ErrCaughtUp instead of starting another pass (a
	// continuously trained model sees each streamed sequence once, and
	// soon after it lands). Seed and Shuffle are ignored.
	Follow bool `json:"follow,omitempty"`
}

// MarshalText / UnmarshalText make a Cursor easy to keep in a state blob.
func (c Cursor) MarshalText() ([]byte, error) {
	type plain Cursor
	return json.Marshal(plain(c))
}

func (c *Cursor) UnmarshalText(b []byte) error {
	type plain Cursor
	return json.Unmarshal(b, (*plain)(c))
}

// Reader walks a store's sequences epoch by epoch, in a seeded shuffled
// order (or store order). It is not safe for concurrent use.
type Reader struct {
	st   *Store
	cur  Cursor
	perm []uint32 // order of the current pass, nil until needed
}

// NewReader starts reading at c (a zero Cursor with a Seed starts at the
// beginning).
func (s *Store) NewReader(c Cursor) *Reader {
	return &Reader{st: s, cur: c}
}

// Cursor returns the position of the next Next.
func (r *Reader) Cursor() Cursor { return r.cur }

// Next returns the next sequence and its number. On a store without
// sequences it returns ErrEmpty; a following Reader (Cursor.Follow)
// returns ErrCaughtUp when it has read every committed sequence (wait on
// Store.Changed and call again).
func (r *Reader) Next() (uint64, packing.Sequence, error) {
	if r.cur.Follow {
		if r.cur.Pos >= r.st.NumSequences() {
			return 0, packing.Sequence{}, ErrCaughtUp
		}
		seq, err := r.st.Sequence(r.cur.Pos)
		if err != nil {
			return 0, seq, fmt.Errorf("reader at sequence %d: %w", r.cur.Pos, err)
		}
		r.cur.Pos++
		return r.cur.Pos - 1, seq, nil
	}
	if r.cur.Pos >= r.cur.EpochSize {
		n := r.st.NumSequences()
		if n == 0 {
			return 0, packing.Sequence{}, ErrEmpty
		}
		if r.cur.EpochSize != 0 {
			r.cur.Epoch++
		}
		r.cur.EpochSize, r.cur.Pos, r.perm = n, 0, nil
	}
	idx := r.cur.Pos
	if r.cur.Shuffle {
		if r.perm == nil {
			r.perm = Permutation(r.cur.Seed, r.cur.Epoch, r.cur.EpochSize)
		}
		idx = uint64(r.perm[r.cur.Pos])
	}
	seq, err := r.st.Sequence(idx)
	if err != nil {
		return 0, seq, fmt.Errorf("reader at epoch %d pos %d: %w", r.cur.Epoch, r.cur.Pos, err)
	}
	r.cur.Pos++
	return idx, seq, nil
}

// Permutation is the shuffled order of n sequences for one epoch: a
// Fisher-Yates shuffle driven by PCG seeded with (seed, epoch). PCG's output
// is fixed by its specification and boundedRand is ours, so the order is the
// same on every machine and Go version.
func Permutation(seed, epoch, n uint64) []uint32 {
	p := make([]uint32, n)
	for i := range p {
		p[i] = uint32(i)
	}
	rng := rand.New(rand.NewPCG(seed, epoch^0x9e3779b97f4a7c15))
	for i := len(p) - 1; i > 0; i-- {
		j := boundedRand(rng, uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// boundedRand is Lemire's unbiased multiply-shift reduction to [0, n).
func boundedRand(rng *rand.Rand, n uint64) uint64 {
	for {
		hi, lo := bits.Mul64(rng.Uint64(), n)
		if lo >= n || lo >= (-n)%n {
			return hi
		}
	}
}

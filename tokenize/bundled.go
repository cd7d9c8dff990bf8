package tokenize

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	"github.com/pkoukk/tiktoken-go-loader/assets"
)

// DefaultBundled is the tokenizer Bundled("") returns.
const DefaultBundled = "dolma2"

// bundledSpec describes a tokenizer built from a tiktoken rank file shipped in
// github.com/pkoukk/tiktoken-go-loader (MIT), so no download is ever needed.
type bundledSpec struct {
	file     string
	pre      preKind
	specials []AddedToken
	// ranks, when set, keeps only the first ranks merges: BPE stopped
	// early is still exact BPE (HF tokenizers given the same truncated
	// merge list produces the same ids), with a vocabulary small enough
	// for CPU-sized models.
	ranks int
}

func bundledSpecs(name string) (bundledSpec, bool) {
	special := func(id uint32, content string) AddedToken {
		return AddedToken{ID: id, Content: content, Special: true}
	}
	switch name {
	case "dolma2":
		// The EMO tokenizer: cl100k ranks with dolma2's own special tokens. The
		// released model pads its embedding to 100352 rows; that is the model's
		// business, the tokenizer's vocabulary ends at 100277.
		return bundledSpec{file: "cl100k_base.tiktoken", pre: preCL100K, specials: []AddedToken{
			special(100257, "<|endoftext|>"),
			special(100277, "<|pad|>"),
		}}, true
	case "gpt2":
		return bundledSpec{file: "r50k_base.tiktoken", pre: preGPT2, specials: []AddedToken{
			special(50256, "<|endoftext|>"),
		}}, true
	case "dolma2-8k":
		// dolma2's pre-tokenizer and first 8192 cl100k ranks, EOS and PAD
		// right after: vocabulary 8194, for tiny models on CPU (the LM head
		// of a 100k vocabulary dominates a tiny model's step).
		return bundledSpec{file: "cl100k_base.tiktoken", pre: preCL100K, ranks: 8192, specials: []AddedToken{
			special(8192, "<|endoftext|>"),
			special(8193, "<|pad|>"),
		}}, true
	}
	return bundledSpec{}, false
}

// BundledNames lists the names Bundled accepts, default first.
func BundledNames() []string { return []string{"dolma2", "gpt2", "dolma2-8k"} }

// bundled builds each tokenizer once per process; Tokenizer is immutable, so sharing
// it is safe.
var bundled = map[string]func() (*Tokenizer, error){
	"dolma2":    sync.OnceValues(func() (*Tokenizer, error) { return buildBundled("dolma2") }),
	"gpt2":      sync.OnceValues(func() (*Tokenizer, error) { return buildBundled("gpt2") }),
	"dolma2-8k": sync.OnceValues(func() (*Tokenizer, error) { return buildBundled("dolma2-8k") }),
}

// Bundled returns a tokenizer that ships with the binary: "dolma2" (the default, also
// for "") or "gpt2". Its MarshalJSON output loads in Hugging Face tokenizers and gives
// the same ids.
func Bundled(name string) (*Tokenizer, error) {
	if name == "" {
		name = DefaultBundled
	}
	build, ok := bundled[name]
	if !ok {
		return nil, fmt.Errorf("tokenize: %w %q (have %v)", ErrUnknownBundled, name, BundledNames())
	}
	return build()
}

func buildBundled(name string) (*Tokenizer, error) {
	spec, _ := bundledSpecs(name)
	data, err := assets.Assets.ReadFile(spec.file)
	if err != nil {
		return nil, fmt.Errorf("tokenize: bundled %s: %w", name, err)
	}
	ranks, err := parseTiktoken(data)
	if err != nil {
		return nil, fmt.Errorf("tokenize: bundled %s: %s: %w", name, spec.file, err)
	}
	if spec.ranks > 0 {
		ranks = ranks[:spec.ranks]
	}
	m, err := newModelFromRanks(ranks, spec.specials)
	if err != nil {
		return nil, fmt.Errorf("tokenize: bundled %s: %w", name, err)
	}
	added := make([]*AddedToken, len(spec.specials))
	for i := range spec.specials {
		a := spec.specials[i]
		added[i] = &a
	}
	t := newTokenizer(m, spec.pre, false, added, nil)
	t.name = name
	return t, nil
}

// parseTiktoken reads "base64 rank" lines; ranks must be 0..n-1.
func parseTiktoken(data []byte) ([][]byte, error) {
	toks := make([][]byte, 0, bytes.Count(data, []byte{'\n'})+1)
	arena := make([]byte, 0, len(data)*3/4)
	for lineNo, line := range bytes.Split(data, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		sp := bytes.IndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("line %d: no rank", lineNo+1)
		}
		rank, err := strconv.Atoi(string(line[sp+1:]))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNo+1, err)
		}
		if rank != len(toks) {
			return nil, fmt.Errorf("line %d: rank %d out of order", lineNo+1, rank)
		}
		off := len(arena)
		arena = arena[:off+base64.StdEncoding.DecodedLen(sp)]
		n, err := base64.StdEncoding.Decode(arena[off:], line[:sp])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNo+1, err)
		}
		arena = arena[:off+n]
		toks = append(toks, arena[off:off+n:off+n])
	}
	return toks, nil
}

// newModelFromRanks turns tiktoken ranks into a merges-based model the way Hugging
// Face's tiktoken converter does: id = rank, and each multi-byte token's merge is the
// pair that byte-pair encoding of the token with only lower ranks ends in. Merges are
// then in rank order, so merge priority and tiktoken's rank priority coincide.
func newModelFromRanks(toks [][]byte, specials []AddedToken) (*model, error) {
	rank := make(map[string]uint32, len(toks))
	for i, t := range toks {
		rank[string(t)] = uint32(i)
	}
	m := &model{odd: map[uint32]string{}, size: len(toks)}
	for _, s := range specials {
		m.size = max(m.size, int(s.ID)+1)
	}
	m.has = make([]bool, m.size)
	m.tokOff = make([]uint32, m.size+1)
	specialAt := map[uint32]string{}
	for _, s := range specials {
		if int(s.ID) < len(toks) {
			return nil, fmt.Errorf("special token %q id %d collides with rank %d", s.Content, s.ID, s.ID)
		}
		specialAt[s.ID] = s.Content
	}
	for id := 0; id < m.size; id++ {
		m.tokOff[id] = uint32(len(m.tok))
		if id < len(toks) {
			m.tok = append(m.tok, toks[id]...)
			m.has[id] = true
		} else if s, ok := specialAt[uint32(id)]; ok {
			if raw, ok := bl.decode(s); ok {
				m.tok = append(m.tok, raw...)
			} else {
				m.odd[uint32(id)] = s
			}
			m.has[id] = true
		}
	}
	m.tokOff[m.size] = uint32(len(m.tok))
	for b := 0; b < 256; b++ {
		id, ok := rank[string([]byte{byte(b)})]
		if !ok {
			return nil, fmt.Errorf("byte 0x%02X has no rank", b)
		}
		m.byteID[b] = id
	}
	// Each token's split depends only on the ranks, so the splits are computed in
	// parallel; inserting them in rank order then fixes the merge ranks.
	split := make([]int32, len(toks)) // length of the left part
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var starts []int
			var pr []uint32
			for id := w; id < len(toks); id += workers {
				tok := toks[id]
				if len(tok) < 2 {
					continue
				}
				starts, pr = rankBPE(starts[:0], pr[:0], tok, rank, uint32(id))
				if len(starts) != 2 {
					errs[w] = fmt.Errorf("token %d (%q) is not reachable by merges of lower ranks (%d parts)", id, tok, len(starts))
					return
				}
				split[id] = int32(starts[1])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.pairs = newPairTable(len(toks))
	m.merges = make([]merge, 0, len(toks))
	for id, tok := range toks {
		if len(tok) < 2 {
			continue
		}
		left, right := rank[string(tok[:split[id]])], rank[string(tok[split[id]:])]
		m.pairs.put(left, right, uint32(len(m.merges)), uint32(id))
		m.merges = append(m.merges, merge{left, right, uint32(id)})
	}
	return m, nil
}

// rankBPE is tiktoken's byte-pair merge restricted to ranks below maxRank: merge the
// adjacent pair whose concatenation has the lowest rank, leftmost first. It returns
// the start offsets of the resulting parts; pr is scratch.
func rankBPE(starts []int, pr []uint32, tok []byte, rank map[string]uint32, maxRank uint32) ([]int, []uint32) {
	for i := range tok {
		starts = append(starts, i)
	}
	pairRank := func(i int) uint32 { // rank of parts i and i+1 joined
		end := len(tok)
		if i+2 < len(starts) {
			end = starts[i+2]
		}
		if r, ok := rank[string(tok[starts[i]:end])]; ok && r < maxRank {
			return r
		}
		return noRank
	}
	for i := 0; i+1 < len(starts); i++ {
		pr = append(pr, pairRank(i))
	}
	for len(starts) > 1 {
		best, bi := uint32(noRank), -1
		for i, r := range pr {
			if r < best {
				best, bi = r, i
			}
		}
		if bi < 0 {
			break
		}
		starts = append(starts[:bi+1], starts[bi+2:]...)
		pr = append(pr[:bi], pr[bi+1:]...)
		if bi < len(pr) {
			pr[bi] = pairRank(bi)
		}
		if bi > 0 {
			pr[bi-1] = pairRank(bi - 1)
		}
	}
	return starts, pr
}

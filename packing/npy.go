package packing

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ShardWriter exports sequences as numpy .npy shards, for training code
// outside emopipe. Each shard NNNNN has three files:
//
//	shard_NNNNN.tokens.npy  uint32 [n, seq_len]   token ids
//	shard_NNNNN.spans.npy   int64  [m, 5]          (row, start, length, cont_prev, cont_next)
//	shard_NNNNN.docs.jsonl  one {"doc","domain"} line per spans row
//
// where row is the sequence's index inside the shard. np.load reads both
// arrays without pickle.
type ShardWriter struct {
	dir      string
	seqLen   int
	perShard int

	shard   int
	rows    int
	spans   int
	tokF    *os.File
	tokW    *bufio.Writer
	spanF   *os.File
	spanW   *bufio.Writer
	docF    *os.File
	docW    *bufio.Writer
	written []string
}

// NewShardWriter writes shards of perShard sequences of seqLen tokens into dir.
func NewShardWriter(dir string, seqLen, perShard int) (*ShardWriter, error) {
	if perShard < 1 {
		return nil, fmt.Errorf("packing: sequences per shard must be positive, got %d", perShard)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("packing: shard dir: %w", err)
	}
	return &ShardWriter{dir: dir, seqLen: seqLen, perShard: perShard}, nil
}

// Write appends one sequence, starting a new shard when the current is full.
func (w *ShardWriter) Write(s *Sequence) error {
	if len(s.Tokens) != w.seqLen {
		return fmt.Errorf("packing: sequence has %d tokens, shards hold %d", len(s.Tokens), w.seqLen)
	}
	if w.tokF == nil {
		if err := w.open(); err != nil {
			return err
		}
	}
	var buf [8]byte
	for _, t := range s.Tokens {
		binary.LittleEndian.PutUint32(buf[:4], t)
		w.tokW.Write(buf[:4])
	}
	for _, sp := range s.Spans {
		for _, v := range []int64{int64(w.rows), int64(sp.Start), int64(sp.Length), b2i(sp.ContinuesFromPrev), b2i(sp.ContinuesInNext)} {
			binary.LittleEndian.PutUint64(buf[:], uint64(v))
			w.spanW.Write(buf[:])
		}
		line, _ := json.Marshal(struct {
			Doc    string `json:"doc"`
			Domain string `json:"domain"`
		}{sp.DocKey, sp.Domain})
		w.docW.Write(append(line, '\n'))
		w.spans++
	}
	w.rows++
	if w.rows == w.perShard {
		return w.closeShard()
	}
	return nil
}

// Close finishes the last shard and returns the paths of every file written.
func (w *ShardWriter) Close() ([]string, error) {
	if w.tokF != nil {
		if err := w.closeShard(); err != nil {
			return w.written, err
		}
	}
	return w.written, nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func (w *ShardWriter) open() error {
	base := filepath.Join(w.dir, fmt.Sprintf("shard_%05d", w.shard))
	var err error
	create := func(path string) (*os.File, *bufio.Writer) {
		if err != nil {
			return nil, nil
		}
		var f *os.File
		f, err = os.Create(path)
		if err != nil {
			return nil, nil
		}
		return f, bufio.NewWriterSize(f, 1<<20)
	}
	w.tokF, w.tokW = create(base + ".tokens.npy")
	w.spanF, w.spanW = create(base + ".spans.npy")
	w.docF, w.docW = create(base + ".docs.jsonl")
	if err != nil {
		return fmt.Errorf("packing: create shard: %w", err)
	}
	// Placeholder headers, rewritten with the final shapes on close.
	w.tokW.Write(npyHeader("<u4", 0, w.seqLen))
	w.spanW.Write(npyHeader("<i8", 0, 5))
	w.rows, w.spans = 0, 0
	return nil
}

func (w *ShardWriter) closeShard() error {
	fix := func(f *os.File, bw *bufio.Writer, hdr []byte) error {
		if err := bw.Flush(); err != nil {
			return err
		}
		if _, err := f.WriteAt(hdr, 0); err != nil {
			return err
		}
		w.written = append(w.written, f.Name())
		return f.Close()
	}
	errs := []error{
		fix(w.tokF, w.tokW, npyHeader("<u4", w.rows, w.seqLen)),
		fix(w.spanF, w.spanW, npyHeader("<i8", w.spans, 5)),
	}
	if err := w.docW.Flush(); err != nil {
		errs = append(errs, err)
	}
	w.written = append(w.written, w.docF.Name())
	errs = append(errs, w.docF.Close())
	w.tokF, w.spanF, w.docF = nil, nil, nil
	w.shard++
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("packing: finish shard: %w", err)
		}
	}
	return nil
}

// npyHeader is a version 1.0 .npy header for a C-order 2-D array, padded to
// a fixed 128 bytes so that it can be rewritten in place once the row count
// is known.
func npyHeader(descr string, rows, cols int) []byte {
	const total = 128
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }", descr, rows, cols)
	h := make([]byte, 0, total)
	h = append(h, "\x93NUMPY\x01\x00"...)
	h = binary.LittleEndian.AppendUint16(h, uint16(total-10))
	h = append(h, dict...)
	for len(h) < total-1 {
		h = append(h, ' ')
	}
	return append(h, '\n')
}

// ReadNPYUint32 reads a 2-D little-endian uint32 .npy file written by
// ShardWriter (used by tests and inspect; numpy is the real consumer).
func ReadNPYUint32(r io.Reader) (rows, cols int, data []uint32, err error) {
	hdr := make([]byte, 128)
	if _, err = io.ReadFull(r, hdr); err != nil {
		return 0, 0, nil, err
	}
	if _, err = fmt.Sscanf(string(hdr[10:]), "{'descr': '<u4', 'fortran_order': False, 'shape': (%d, %d), }", &rows, &cols); err != nil {
		return 0, 0, nil, fmt.Errorf("packing: not a uint32 shard header: %w", err)
	}
	raw := make([]byte, rows*cols*4)
	if _, err = io.ReadFull(r, raw); err != nil {
		return 0, 0, nil, err
	}
	data = make([]uint32, rows*cols)
	for i := range data {
		data[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return rows, cols, data, nil
}

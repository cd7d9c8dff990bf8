package train

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"
)

// Checkpoints are safetensors files (8-byte little-endian header length,
// a JSON header naming each tensor's dtype, shape and byte range, then the
// raw little-endian data), so PyTorch's `safetensors` reads them as they
// are. Tensor names are GoMLX store paths without the leading "/":
// "blocks/00/attention/w_q", "optimizer/adam_m/blocks/00/attention/w_q".
// Tensors are written in name order and the header is JSON with sorted
// keys: equal weights give byte-identical files (and equal sha256).

// ErrCheckpoint marks a checkpoint file that is missing, corrupt or does
// not match the model.
var ErrCheckpoint = errors.New("bad checkpoint")

var safetensorsDTypes = map[dtypes.DType]string{
	dtypes.Float32: "F32", dtypes.Float64: "F64", dtypes.Int32: "I32", dtypes.Int64: "I64",
	dtypes.Uint32: "U32", dtypes.Uint64: "U64", dtypes.Bool: "BOOL", dtypes.Uint8: "U8", dtypes.Int8: "I8",
}

type stEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// writeSafetensors writes named tensors to w and returns the SHA-256 of
// what it wrote.
func writeSafetensors(w io.Writer, named map[string]*tensors.Tensor, meta map[string]string) (string, int64, error) {
	names := make([]string, 0, len(named))
	for n := range named {
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{}
	if len(meta) > 0 {
		header["__metadata__"] = meta
	}
	var off int64
	for _, n := range names {
		t := named[n]
		dt, ok := safetensorsDTypes[t.DType()]
		if !ok {
			return "", 0, fmt.Errorf("checkpoint: %s has dtype %s, which safetensors output does not support here", n, t.DType())
		}
		size := t.Shape().ByteSize()
		dims := t.Shape().Dimensions
		if dims == nil {
			dims = []int{}
		}
		header[n] = stEntry{DType: dt, Shape: dims, DataOffsets: [2]int64{off, off + size}}
		off += size
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return "", 0, err
	}
	for len(hj)%8 != 0 { // the format's recommended alignment
		hj = append(hj, ' ')
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hj)))
	bw.Write(lenBuf[:])
	bw.Write(hj)
	for _, n := range names {
		var werr error
		if err := named[n].ConstBytes(func(b []byte) { _, werr = bw.Write(b) }); err != nil {
			return "", 0, fmt.Errorf("checkpoint: read %s: %w", n, err)
		}
		if werr != nil {
			return "", 0, werr
		}
	}
	if err := bw.Flush(); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), 8 + int64(len(hj)) + off, nil
}

// readSafetensors reads a file written by writeSafetensors (or any
// safetensors file of the supported dtypes).
func readSafetensors(path string) (map[string]*tensors.Tensor, map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if len(data) < 8 {
		return nil, nil, fmt.Errorf("%w: %s is truncated", ErrCheckpoint, path)
	}
	hl := binary.LittleEndian.Uint64(data[:8])
	if hl > uint64(len(data)-8) {
		return nil, nil, fmt.Errorf("%w: %s: header length %d beyond the file", ErrCheckpoint, path, hl)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+hl], &raw); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: header: %w", ErrCheckpoint, path, err)
	}
	body := data[8+hl:]
	byName := map[string]dtypes.DType{}
	for dt, n := range safetensorsDTypes {
		byName[n] = dt
	}
	out := map[string]*tensors.Tensor{}
	var meta map[string]string
	for name, r := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(r, &meta); err != nil {
				return nil, nil, fmt.Errorf("%w: %s: metadata: %w", ErrCheckpoint, path, err)
			}
			continue
		}
		var e stEntry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: entry %s: %w", ErrCheckpoint, path, name, err)
		}
		dt, ok := byName[e.DType]
		if !ok {
			return nil, nil, fmt.Errorf("%w: %s: %s has unsupported dtype %s", ErrCheckpoint, path, name, e.DType)
		}
		shape := shapes.Make(dt, e.Shape...)
		b, en := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || en < b || en > int64(len(body)) || en-b != shape.ByteSize() {
			return nil, nil, fmt.Errorf("%w: %s: %s has a bad byte range", ErrCheckpoint, path, name)
		}
		t := tensors.FromShape(shape)
		if err := t.MutableBytes(func(dst []byte) { copy(dst, body[b:en]) }); err != nil {
			return nil, nil, err
		}
		out[name] = t
	}
	return out, meta, nil
}

// writeFileAtomic writes a new file at path via a temporary file in the
// same directory, fsync and rename, then fsyncs the directory: a kill at any
// moment leaves either no file at path or the complete one.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := write(f); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// fileSHA256 hashes a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkpointName is the file name of the checkpoint after step steps.
func checkpointName(step int) string { return fmt.Sprintf("step-%08d.safetensors", step) }

// pruneCheckpoints deletes checkpoint files in dir other than keep, and
// temporary files left by a killed writer.
func pruneCheckpoints(dir string, keep ...string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		n := e.Name()
		isCkpt := strings.HasPrefix(n, "step-") && strings.HasSuffix(n, ".safetensors")
		isTmp := strings.HasPrefix(n, ".step-") && strings.Contains(n, ".tmp-")
		if !isCkpt && !isTmp {
			continue
		}
		kept := false
		for _, k := range keep {
			kept = kept || n == k
		}
		if !kept {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// FileConfig controls a FileSource.
type FileConfig struct {
	Fields Fields `yaml:"fields" json:"fields"`
	// Domain labels documents whose records carry none (all .txt files).
	Domain string `yaml:"domain" json:"domain"`
	// MaxDocBytes: longer records are rejected as oversize without being
	// held in memory. Default 16 MiB.
	MaxDocBytes int `yaml:"max_doc_bytes" json:"max_doc_bytes"`
	// Repair, if set, turns invalid UTF-8 into valid text before a record is
	// parsed (policy "replace"); when nil such records are rejected.
	Repair func([]byte) []byte `yaml:"-" json:"-"`
}

// DefaultFileConfig returns the documented defaults.
func DefaultFileConfig() FileConfig {
	return FileConfig{Fields: DefaultFields(), MaxDocBytes: 16 << 20}
}

// FilePos is a position in a file set: the file's index in the sorted list
// and the number of records of it already consumed.
type FilePos struct {
	File   int   `json:"file"`
	Record int64 `json:"record"`
}

// Item is what a source yields: a Document, or a Reject when Doc is nil.
type Item struct {
	Doc    *Document
	Reject *Reject
	// Next is the position just after this item: resuming there skips it.
	Next FilePos
	// InputBytes is how many bytes of input this item consumed (progress).
	InputBytes int64
}

// FileSource reads documents from files and directories: JSONL (.jsonl,
// .ndjson, .json: one record per line) and any other file as one plain-text
// document; each may be compressed (.gz, .zst). Directories are walked
// recursively in lexical order. The list of files is fixed at creation so
// that positions stay meaningful across restarts.
type FileSource struct {
	cfg   FileConfig
	files []string
	total int64

	pos   FilePos
	cur   *fileReader
	fatal error
}

// ExpandPaths lists the files behind paths (files, or directories walked
// recursively), in a stable order. An unreadable or missing path is an
// error: the user named it.
func ExpandPaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", p, err)
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				// An unreadable subdirectory is kept as a path so that it is
				// rejected, counted and reported like an unreadable file.
				found = append(found, path)
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if !d.IsDir() {
				// Symlinks and other non-regular entries are kept too: one
				// that cannot be read is rejected as unreadable, not skipped.
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", p, err)
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// NewFileSource reads the given files (see ExpandPaths) from pos.
func NewFileSource(files []string, cfg FileConfig, pos FilePos) *FileSource {
	if cfg.MaxDocBytes <= 0 {
		cfg.MaxDocBytes = DefaultFileConfig().MaxDocBytes
	}
	if cfg.Fields == (Fields{}) {
		cfg.Fields = DefaultFields()
	}
	s := &FileSource{cfg: cfg, files: files, pos: pos}
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			s.total += st.Size()
		}
	}
	return s
}

// Files returns the file list the positions refer to.
func (s *FileSource) Files() []string { return s.files }

// TotalBytes is the on-disk size of all input (for progress).
func (s *FileSource) TotalBytes() int64 { return s.total }

// Next returns the next item, or io.EOF after the last file.
func (s *FileSource) Next() (Item, error) {
	for {
		if s.fatal != nil {
			return Item{}, s.fatal
		}
		if s.pos.File >= len(s.files) {
			return Item{}, io.EOF
		}
		if s.cur == nil {
			fr, rej := openFile(s.files[s.pos.File], s.cfg)
			if rej != nil {
				rej.Source, rej.Position = s.files[s.pos.File], "file"
				s.pos = FilePos{File: s.pos.File + 1}
				return Item{Reject: rej, Next: s.pos, InputBytes: int64(rej.Bytes)}, nil
			}
			if err := fr.skip(s.pos.Record); err != nil {
				fr.close()
				s.pos = FilePos{File: s.pos.File + 1}
				return Item{Reject: &Reject{Source: fr.path, Position: "file", Reason: ReasonDecompress, Detail: shorten(err.Error())}, Next: s.pos}, nil
			}
			s.cur = fr
		}
		it, err := s.cur.next()
		if err == io.EOF {
			s.cur.close()
			s.cur = nil
			s.pos = FilePos{File: s.pos.File + 1}
			continue
		}
		if err != nil {
			// The rest of this file cannot be read (truncated archive, I/O
			// error): record that once, keep what was read, move on.
			s.cur.close()
			s.cur = nil
			rej := &Reject{Source: s.files[s.pos.File], Position: fmt.Sprintf("record %d", s.pos.Record+1), Reason: ReasonDecompress, Detail: "rest of file unreadable: " + shorten(err.Error())}
			var pe *os.PathError
			if errors.As(err, &pe) {
				rej.Reason = ReasonUnreadable
			}
			s.pos = FilePos{File: s.pos.File + 1}
			return Item{Reject: rej, Next: s.pos}, nil
		}
		s.pos.Record = s.cur.consumed
		it.Next = s.pos
		return it, nil
	}
}

// Close releases the open file. Idempotent.
func (s *FileSource) Close() error {
	if s.cur != nil {
		s.cur.close()
		s.cur = nil
	}
	return nil
}

// fileReader yields the records of one file.
type fileReader struct {
	path  string
	cfg   FileConfig
	jsonl bool
	f     *os.File
	count *countingReader
	dec   io.ReadCloser // decompressor, if any
	br    *bufio.Reader
	done  bool // plain-text file: its one document was returned
	// consumed counts records (lines, or the one plain-text document)
	// read so far, blank lines included: it is the resume position.
	consumed int64
}

func openFile(path string, cfg FileConfig) (*fileReader, *Reject) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Reject{Reason: ReasonUnreadable, Detail: shorten(err.Error())}
	}
	if st, err := f.Stat(); err != nil || st.IsDir() {
		f.Close()
		return nil, &Reject{Reason: ReasonUnreadable, Detail: "not a regular file"}
	}
	fr := &fileReader{path: path, cfg: cfg, f: f, count: &countingReader{r: f}}
	name := strings.ToLower(path)
	var r io.Reader = fr.count
	switch {
	case strings.HasSuffix(name, ".gz"):
		gz, err := gzip.NewReader(r)
		if err != nil {
			f.Close()
			return nil, &Reject{Reason: ReasonDecompress, Detail: "gzip: " + shorten(err.Error())}
		}
		fr.dec, r, name = gz, gz, strings.TrimSuffix(name, ".gz")
	case strings.HasSuffix(name, ".zst"):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			f.Close()
			return nil, &Reject{Reason: ReasonDecompress, Detail: "zstd: " + shorten(err.Error())}
		}
		rc := zr.IOReadCloser()
		fr.dec, r, name = rc, rc, strings.TrimSuffix(name, ".zst")
	}
	for _, ext := range []string{".jsonl", ".ndjson", ".json"} {
		if strings.HasSuffix(name, ext) {
			fr.jsonl = true
		}
	}
	fr.br = bufio.NewReaderSize(r, 256<<10)
	return fr, nil
}

func (fr *fileReader) close() {
	if fr.dec != nil {
		fr.dec.Close()
	}
	fr.f.Close()
}

// skip consumes n records (resuming inside a file).
func (fr *fileReader) skip(n int64) error {
	for i := int64(0); i < n; i++ {
		if !fr.jsonl {
			fr.done, fr.consumed = true, 1
			return nil
		}
		if _, _, err := fr.line(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
	return nil
}

// line reads one line without its newline. A line longer than MaxDocBytes
// is consumed but not kept: oversize reports its length.
func (fr *fileReader) line() (line []byte, oversize int, err error) {
	var buf []byte
	total := 0
	for {
		chunk, err := fr.br.ReadSlice('\n')
		if total == 0 && err == nil || total == 0 && len(chunk) > 0 {
			fr.consumed++
		}
		total += len(chunk)
		if total <= fr.cfg.MaxDocBytes+1 {
			buf = append(buf, chunk...)
		} else {
			buf = nil
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && total > 0:
			// last line without newline
		case err != nil:
			return nil, 0, err
		}
		if total > fr.cfg.MaxDocBytes+1 {
			return nil, total, nil
		}
		return bytes.TrimRight(buf, "\r\n"), 0, nil
	}
}

func (fr *fileReader) next() (Item, error) {
	before := fr.count.n
	it, err := fr.read()
	it.InputBytes = fr.count.n - before
	return it, err
}

func (fr *fileReader) read() (Item, error) {
	if !fr.jsonl {
		if fr.done {
			return Item{}, io.EOF
		}
		fr.done, fr.consumed = true, 1
		pos := "file"
		data, err := io.ReadAll(io.LimitReader(fr.br, int64(fr.cfg.MaxDocBytes)+1))
		if err != nil {
			return Item{}, err
		}
		id := fr.path
		if len(data) > fr.cfg.MaxDocBytes {
			n, _ := io.Copy(io.Discard, fr.br)
			return Item{Reject: &Reject{Source: fr.path, Position: pos, DocKey: id, Reason: ReasonOversize,
				Detail: fmt.Sprintf("more than %d bytes (max_doc_bytes)", fr.cfg.MaxDocBytes), Bytes: len(data) + int(n)}}, nil
		}
		if looksBinary(data) {
			return Item{Reject: &Reject{Source: fr.path, Position: pos, DocKey: id, Reason: ReasonBinary, Detail: "NUL byte in the first 8 KiB", Bytes: len(data)}}, nil
		}
		if fr.cfg.Repair != nil {
			data = fr.cfg.Repair(data)
		}
		return Item{Doc: &Document{ID: id, Text: data, Domain: fr.cfg.Domain, Source: fr.path, Position: pos}}, nil
	}
	for {
		line, oversize, err := fr.line()
		if err != nil {
			return Item{}, err
		}
		pos := fmt.Sprintf("line %d", fr.consumed)
		if oversize > 0 {
			return Item{Reject: &Reject{Source: fr.path, Position: pos, Reason: ReasonOversize,
				Detail: fmt.Sprintf("%d-byte record, more than max_doc_bytes %d", oversize, fr.cfg.MaxDocBytes), Bytes: oversize}}, nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // blank lines are layout, not records
		}
		if fr.cfg.Repair != nil {
			line = fr.cfg.Repair(line)
		}
		fallback := fmt.Sprintf("%s:%d", fr.path, fr.consumed)
		doc, rej := fr.cfg.Fields.ParseJSON(line, fallback)
		if rej != nil {
			rej.Source, rej.Position = fr.path, pos
			return Item{Reject: rej}, nil
		}
		if doc.Domain == "" {
			doc.Domain = fr.cfg.Domain
		}
		doc.Source, doc.Position = fr.path, pos
		return Item{Doc: &doc}, nil
	}
}

// looksBinary uses git's rule: a NUL byte in the first 8000 bytes.
func looksBinary(b []byte) bool {
	return bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ReadRaw calls fn with every raw record of the files: each non-blank line
// of a JSONL file, or the whole of any other file, unparsed (emopipe
// produce sends them as they are, malformed ones included).
func ReadRaw(files []string, maxBytes int, fn func(path string, value []byte) error) error {
	cfg := DefaultFileConfig()
	if maxBytes > 0 {
		cfg.MaxDocBytes = maxBytes
	}
	for _, path := range files {
		fr, rej := openFile(path, cfg)
		if rej != nil {
			return fmt.Errorf("%s: %s: %s", path, rej.Reason, rej.Detail)
		}
		err := func() error {
			defer fr.close()
			if !fr.jsonl {
				data, err := io.ReadAll(fr.br)
				if err != nil {
					return err
				}
				return fn(path, data)
			}
			for {
				line, oversize, err := fr.line()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if oversize > 0 {
					return fmt.Errorf("line %d is longer than %d bytes", fr.consumed, cfg.MaxDocBytes)
				}
				if len(bytes.TrimSpace(line)) == 0 {
					continue
				}
				if err := fn(path, append([]byte(nil), line...)); err != nil {
					return err
				}
			}
		}()
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
	return nil
}

package pipelines

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/tokenize"
)

// PackConfig configures Pack.
type PackConfig struct {
	// Store is the store directory (created if missing).
	Store string
	// Inputs are files and directories (see ingest.FileSource).
	Inputs []string
	Files  ingest.FileConfig
	// Packing: seq_len, mode, max_open (EOS/PAD come from the tokenizer).
	Packing packing.Config
	// Tokenizer is loaded by the caller (bundled or from a tokenizer.json).
	Tokenizer *tokenize.Tokenizer
	// InvalidUTF8 is reject (default) or replace.
	InvalidUTF8 UTF8Policy
	// BatchBytes bounds the text tokenised at once (memory). Default 8 MiB.
	BatchBytes int
	// CommitSequences: commit once this many sequences wait. Default 1024.
	CommitSequences int
	// Progress receives a status line (nil: silent).
	Progress io.Writer
	// afterCommit is a test hook: an error stops the run as a crash would
	// (no flush, no final commit).
	afterCommit func(commits int) error
}

// PackResult summarises a Pack run.
type PackResult struct {
	Source     string      `json:"source"`
	Resumed    bool        `json:"resumed"`
	AlreadyRan bool        `json:"already_done"`
	Docs       int         `json:"docs"`
	Rejects    int         `json:"rejects"`
	InputBytes int64       `json:"input_bytes"`
	Stats      store.Stats `json:"store"`
}

// fileState is the resume state of one Pack input set.
type fileState struct {
	Files []string       `json:"files"`
	Pos   ingest.FilePos `json:"pos"`
	Done  bool           `json:"done"`
	Tail  []byte         `json:"tail,omitempty"`
}

// Pack reads the inputs, tokenises, packs and commits to the store. Killed
// at any moment, it leaves a store that a rerun with the same arguments
// completes to exactly the content of an uninterrupted run.
func Pack(ctx context.Context, cfg PackConfig) (PackResult, error) {
	var res PackResult
	if cfg.Tokenizer == nil {
		return res, errors.New("pack: no tokenizer")
	}
	if cfg.InvalidUTF8 == "" {
		cfg.InvalidUTF8 = UTF8Reject
	}
	if err := cfg.InvalidUTF8.Validate(); err != nil {
		return res, err
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 8 << 20
	}
	if cfg.CommitSequences <= 0 {
		cfg.CommitSequences = 1024
	}
	files, err := ingest.ExpandPaths(cfg.Inputs)
	if err != nil {
		return res, err
	}
	if len(files) == 0 {
		return res, errors.New("pack: no input files")
	}
	pc := PackingFor(cfg.Tokenizer, cfg.Packing)
	packer, err := packing.New(pc)
	if err != nil {
		return res, err
	}
	hdr := HeaderFor(cfg.Tokenizer, packer.Config())
	st, err := store.Open(cfg.Store, &hdr, store.Options{})
	if err != nil {
		return res, err
	}
	defer st.Close()

	sum := sha256.Sum256([]byte(strings.Join(files, "\x00")))
	res.Source = "files:" + hex.EncodeToString(sum[:6])
	state := fileState{Files: files}
	if raw, err := st.SourceState(res.Source); err != nil {
		return res, err
	} else if raw != nil {
		if err := json.Unmarshal(raw, &state); err != nil {
			return res, fmt.Errorf("pack: resume state of %s: %w", res.Source, err)
		}
		if err := packer.UnmarshalState(state.Tail); err != nil {
			return res, fmt.Errorf("pack: resume state of %s: %w", res.Source, err)
		}
		res.Resumed = true
	}
	if state.Done {
		res.AlreadyRan = true
		res.Stats = st.Stats()
		return res, nil
	}

	fcfg := cfg.Files
	fcfg.Repair = cfg.InvalidUTF8.Repair()
	src := ingest.NewFileSource(files, fcfg, state.Pos)

	// Shutdown order: cancel the readers, wait for both goroutines, then
	// close the source they read from.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		src.Close()
	}()
	batches := make(chan readBatch, 2)
	readErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		readErr <- readFiles(ctx, src, cfg.BatchBytes, batches)
	}()
	tokenized := make(chan readBatch, 2)
	go func() {
		defer wg.Done()
		defer close(tokenized)
		for b := range batches {
			texts := make([]string, len(b.docs))
			for i, d := range b.docs {
				texts[i] = string(d.Text)
			}
			b.ids = cfg.Tokenizer.EncodeBatch(texts)
			select {
			case tokenized <- b:
			case <-ctx.Done():
				return
			}
		}
	}()

	ps := newPackStage(st, packer, nil)
	prog := NewProgress(cfg.Progress)
	var done int64
	commits := 0
	commit := func(pos ingest.FilePos, final bool) error {
		tail, err := packer.MarshalState()
		if err != nil {
			return err
		}
		raw, _ := json.Marshal(fileState{Files: files, Pos: pos, Done: final, Tail: tail})
		if err := ps.commit(res.Source, raw); err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		commits++
		if cfg.afterCommit != nil {
			return cfg.afterCommit(commits)
		}
		return nil
	}
	var last ingest.FilePos = state.Pos
	for b := range tokenized {
		for i, it := range b.items {
			if err := packItem(ps, &res, it, b.ids, b.docIndex[i]); err != nil {
				return res, err
			}
			// After each record, not each read batch: 4096 records of
			// long ids alone can pass what one commit holds.
			if ps.full(cfg.CommitSequences) {
				if err := commit(it.Next, false); err != nil {
					return res, err
				}
			}
		}
		done += b.inputBytes
		last = b.next
		prog.Update(func() string {
			s := st.Stats()
			return fmt.Sprintf("pack %s %s/%s  %d docs  %d seqs  %d rejects  %.1f MB/s",
				Bar(done, src.TotalBytes()), HumanBytes(done), HumanBytes(src.TotalBytes()),
				res.Docs, s.Sequences+uint64(ps.pendingSequences()), res.Rejects, float64(done)/1e6/prog.Elapsed().Seconds())
		})
	}
	if err := <-readErr; err != nil {
		// Interrupted or failed: keep what is complete, resumable.
		if cerr := commit(last, false); cerr != nil {
			return res, errors.Join(err, cerr)
		}
		if errors.Is(err, context.Canceled) {
			return res, fmt.Errorf("pack interrupted after %d documents; run the same command again to resume", res.Docs)
		}
		return res, err
	}
	// End of input: the tail becomes padded sequences.
	ps.batch.Sequences = append(ps.batch.Sequences, packer.Flush()...)
	if err := commit(last, true); err != nil {
		return res, err
	}
	if err := st.Sync(); err != nil {
		return res, err
	}
	res.InputBytes = done
	res.Stats = st.Stats()
	prog.Done(fmt.Sprintf("pack done: %d docs, %d rejects, %d sequences in %s, %s in %.1fs",
		res.Docs, res.Rejects, res.Stats.Sequences, cfg.Store, HumanBytes(done), prog.Elapsed().Seconds()))
	return res, nil
}

// readBatch is a run of consecutive source items, tokenised together.
// packItem rejects or accepts one record read from the files.
func packItem(ps *packStage, res *PackResult, it ingest.Item, ids [][]uint32, docIndex int) error {
	if it.Reject != nil {
		ps.reject(it.Reject)
		res.Rejects++
		return nil
	}
	d := it.Doc
	reason, detail, err := ps.check(d)
	if err != nil {
		return fmt.Errorf("pack: %s %s: %w", d.Source, d.Position, err)
	}
	if reason != "" {
		ps.reject(&ingest.Reject{Source: d.Source, Position: d.Position, DocKey: d.ID, Reason: reason, Detail: detail, Bytes: len(d.Text)})
		res.Rejects++
		return nil
	}
	ps.accept(d, ids[docIndex])
	res.Docs++
	return nil
}

type readBatch struct {
	items      []ingest.Item
	docs       []*ingest.Document
	docIndex   []int // item index → index in docs
	ids        [][]uint32
	next       ingest.FilePos // position after the last item
	inputBytes int64
}

// readFiles fills batches of at most maxBytes of text and sends them in
// order; it closes out when the input ends or ctx is cancelled.
func readFiles(ctx context.Context, src *ingest.FileSource, maxBytes int, out chan<- readBatch) error {
	defer close(out)
	var b readBatch
	size := 0
	send := func() bool {
		select {
		case out <- b:
			b, size = readBatch{}, 0
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		it, err := src.Next()
		if err == io.EOF {
			if len(b.items) > 0 && !send() {
				return ctx.Err()
			}
			return nil
		}
		if err != nil {
			return err
		}
		b.docIndex = append(b.docIndex, len(b.docs))
		b.items = append(b.items, it)
		if it.Doc != nil {
			b.docs = append(b.docs, it.Doc)
			size += len(it.Doc.Text)
		}
		b.next = it.Next
		b.inputBytes += it.InputBytes
		if (size >= maxBytes || len(b.items) >= 4096) && !send() {
			return ctx.Err()
		}
	}
}

package pipelines

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/train"
)

// RunConfig is continuous pretraining from a stream: an ingester and a
// trainer in one process on one store.
type RunConfig struct {
	// Ingest is the Kafka side (Store is the shared store). With no
	// Kafka.Brokers an embedded broker streams Embedded.Corpus.
	Ingest IngestConfig
	// Embedded configures the embedded stream (used when Ingest.Kafka has
	// no brokers).
	Embedded EmbeddedConfig
	// Train is the trainer; Store, Follow and StreamDone are set by Run.
	Train train.Config
	// MaxBacklog bounds the sequences committed but not yet trained:
	// ingestion pauses above it, so a slow trainer does not make the store
	// grow without bound (it can overshoot by, per partition, one
	// uncommitted batch, Ingest.CommitSequences, default MaxBacklog/4 up
	// to 512 here, and one fetch, Ingest.FetchMax records, default 64
	// here). Default 4096.
	MaxBacklog int
	// HeldoutCorpus, if set (gzip'd JSONL, like Embedded.Corpus), is packed
	// once into <store>/heldout and used for evaluation and the report's
	// expert × domain view, unless Train.EvalStore is set.
	HeldoutCorpus []byte
	// ReportDir receives the report at the end (default <store>/report;
	// "-" for none).
	ReportDir string
	Metrics   *Metrics
	// Progress receives the combined progress line (nil: none); Log one
	// line per event (nil: stderr).
	Progress io.Writer
	Log      io.Writer
}

// RunResult is what a run did.
type RunResult struct {
	Train train.Result `json:"train"`
	// Embedded: documents the embedded broker produced (0 with real brokers).
	EmbeddedDocs int `json:"embedded_docs,omitempty"`
	// Report is the summary written at the end (nil with ReportDir "-").
	Report *Summary `json:"report,omitempty"`
	Files  []string `json:"report_files,omitempty"`
}

// Run ingests and trains until the trainer reaches Train.Steps, the
// stream ends (Ingest.IdleExit) and the trainer has caught up, or ctx is
// cancelled. Either way the trainer checkpoints and the ingester commits
// what it has read before Run returns; a kill -9 instead loses the steps
// since the last checkpoint and nothing of the stream. Running it again
// resumes both halves from the store.
func Run(ctx context.Context, cfg RunConfig) (RunResult, error) {
	var res RunResult
	if cfg.Ingest.Store == "" {
		return res, errors.New("run: no store given")
	}
	if cfg.MaxBacklog <= 0 {
		cfg.MaxBacklog = 4096
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	ic := cfg.Ingest
	if ic.Tokenizer == nil {
		return res, errors.New("run: no tokenizer")
	}
	pc := PackingFor(ic.Tokenizer, ic.Packing)
	if err := pc.Validate(); err != nil {
		return res, err
	}
	hdr := HeaderFor(ic.Tokenizer, pc)
	st, err := store.Open(ic.Store, &hdr, store.Options{})
	if err != nil {
		return res, err
	}
	defer st.Close()

	// The stream: real brokers, or an embedded one fed with the corpus.
	var emb *Embedded
	if len(ic.Kafka.Brokers) == 0 {
		if cfg.Embedded.Corpus == nil {
			return res, errors.New("run: no --brokers and no embedded corpus")
		}
		if cfg.Embedded.Topic == "" {
			cfg.Embedded.Topic = ic.Kafka.Topic
		}
		if emb, err = StartEmbedded(ctx, cfg.Embedded); err != nil {
			return res, err
		}
		defer emb.Close()
		ic.Kafka.Brokers, ic.Kafka.Topic = emb.Brokers(), emb.Topic()
		if ic.Kafka.Group == "" {
			ic.Kafka.Group = "emopipe-run"
		}
		fmt.Fprintf(cfg.Log, "run: embedded Kafka broker on %s streams %d documents to topic %s\n", emb.Brokers()[0], emb.Docs(), emb.Topic())
	}
	if ic.Kafka.Group == "" {
		return res, errors.New("run: --group is required with --brokers")
	}

	tc := cfg.Train
	tc.Store = ic.Store
	tc.Follow = true
	if tc.EvalStore == "" && cfg.HeldoutCorpus != nil {
		if tc.EvalStore, err = packHeldout(ctx, ic, cfg.HeldoutCorpus); err != nil {
			return res, err
		}
	}
	streamDone := make(chan struct{})
	tc.StreamDone = streamDone
	tc.Metrics = cfg.Metrics
	tc.Progress = nil // the run's own line covers both halves

	// Backpressure: the trainer's position, and a channel closed (and
	// replaced) at each step for the throttled ingester to wait on.
	var trained atomic.Uint64
	var stepMu sync.Mutex
	stepped := make(chan struct{})
	var last atomic.Pointer[train.StepMetrics]
	var fresh atomic.Pointer[train.Freshness] // the latest known: not every step starts a document
	userOnStep := tc.OnStep
	tc.OnStep = func(m train.StepMetrics) {
		if n := len(m.Seqs); n > 0 {
			trained.Store(m.Seqs[n-1] + 1) // a following trainer reads in store order
		}
		if m.Fresh != nil {
			fresh.Store(m.Fresh)
		}
		last.Store(&m)
		stepMu.Lock()
		close(stepped)
		stepped = make(chan struct{})
		stepMu.Unlock()
		if userOnStep != nil {
			userOnStep(m)
		}
	}
	tr, err := train.NewWithStore(ctx, st, tc)
	if err != nil {
		return res, err
	}
	defer tr.Close()
	trained.Store(tr.Cursor().Pos)
	cfg.Metrics.Describe("emopipe_run_backlog_sequences", "gauge", "Sequences in the store the trainer has not reached yet.")
	cfg.Metrics.Describe("emopipe_run_throttled_seconds_total", "counter", "Time ingestion waited for the trainer (backlog above the bound).")
	ic.Throttle = func(ctx context.Context) error {
		t0 := time.Now()
		defer func() {
			if w := time.Since(t0); w > time.Millisecond {
				cfg.Metrics.Add("emopipe_run_throttled_seconds_total", w.Seconds())
			}
		}()
		for {
			backlog := int64(st.NumSequences()) - int64(trained.Load())
			cfg.Metrics.Set("emopipe_run_backlog_sequences", float64(backlog))
			if backlog < int64(cfg.MaxBacklog) {
				return nil
			}
			stepMu.Lock()
			ch := stepped
			stepMu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	ic.Metrics, ic.Progress, ic.Log = cfg.Metrics, nil, cfg.Log
	// The throttle acts between fetches on committed sequences: an
	// ingester can overshoot MaxBacklog by the batch it has not committed
	// yet and one fetch, per partition. Keep both small against the bound.
	if ic.FetchMax == 0 {
		ic.FetchMax = 64
	}
	if ic.CommitSequences == 0 {
		ic.CommitSequences = min(512, max(16, cfg.MaxBacklog/4))
	}

	in, err := NewIngester(st, ic)
	if err != nil {
		return res, err
	}
	defer in.Close()
	ictx, stopIngest := context.WithCancel(ctx)
	defer stopIngest()
	ingestErr := make(chan error, 1)
	go func() {
		err := in.Run(ictx)
		close(streamDone)
		ingestErr <- err
	}()

	prog := NewProgress(cfg.Progress)
	pctx, stopProg := context.WithCancel(ctx)
	if cfg.Progress != nil {
		go every(pctx, 250*time.Millisecond, func() bool {
			prog.Update(func() string { return runLine(tc.Steps, last.Load(), fresh.Load(), cfg.Metrics, emb) })
			return true
		})
	}
	// A failing ingester stops the trainer (which checkpoints); a finished
	// trainer stops the ingester (which commits what it read).
	tctx, stopTrain := context.WithCancel(ctx)
	defer stopTrain()
	var ierr error
	ingestDone := make(chan struct{})
	go func() {
		ierr = <-ingestErr
		close(ingestDone)
		if ierr != nil {
			stopTrain()
		}
	}()
	res.Train, err = tr.Run(tctx)
	stopIngest()
	<-ingestDone
	stopProg()
	if emb != nil {
		res.EmbeddedDocs, _ = emb.Produced()
	}
	if err == nil {
		err = ierr
	}
	if ierr != nil && res.Train.Interrupted && ctx.Err() == nil {
		res.Train.Interrupted = false // stopped by the ingester's error, reported below
	}
	prog.Done(runLine(tc.Steps, last.Load(), fresh.Load(), cfg.Metrics, emb))
	if err != nil {
		return res, err
	}
	// The report opens the held-out store and reads the metrics log: the
	// trainer lets go of both first.
	if err := tr.Close(); err != nil {
		return res, err
	}
	if cfg.ReportDir != "-" {
		rc := ReportConfig{Dir: cfg.ReportDir, EvalStore: tc.EvalStore, Backend: tc.Backend}
		sum, files, err := Report(context.WithoutCancel(ctx), st, rc)
		if err != nil {
			return res, err
		}
		res.Report, res.Files = &sum, files
	}
	return res, nil
}

// runLine is the progress line of a run: the trainer's step and loss,
// the stream's documents, the backlog between them and how fresh the
// trained data is.
func runLine(steps int, m *train.StepMetrics, f *train.Freshness, mt *Metrics, emb *Embedded) string {
	step, loss := 0, 0.0
	fresh := "-"
	if m != nil {
		step, loss = m.Step, m.Loss
	}
	if f != nil {
		fresh = fmt.Sprintf("%.1fs", f.MeanSeconds)
	}
	s := fmt.Sprintf("run %s step %d/%d loss %.4f | ingested %.0f docs %.0f seqs | backlog %.0f | fresh %s | %.0f tok/s",
		Bar(int64(step), int64(steps)), step, steps, loss, mt.Sum("emopipe_ingest_documents_total"),
		mt.Sum("emopipe_ingest_sequences_total"), mt.Get("emopipe_run_backlog_sequences"), fresh, mt.Get("emopipe_train_tokens_per_second"))
	if emb != nil {
		n, _ := emb.Produced()
		s += fmt.Sprintf(" | embedded %d/%d produced", n, emb.Docs())
	}
	return s
}

// packHeldout packs the held-out corpus once into <store>/heldout with
// the run's tokenizer and packing, and returns that directory.
func packHeldout(ctx context.Context, ic IngestConfig, corpus []byte) (string, error) {
	dir := filepath.Join(ic.Store, "heldout")
	if err := os.MkdirAll(ic.Store, 0o755); err != nil {
		return "", err
	}
	// A fixed file name keeps the pack's source name, so a second run
	// finds the held-out store complete.
	input := filepath.Join(ic.Store, "heldout-input.jsonl.gz")
	if err := os.WriteFile(input, corpus, 0o644); err != nil {
		return "", err
	}
	defer os.Remove(input)
	_, err := Pack(ctx, PackConfig{Store: dir, Inputs: []string{input}, Packing: ic.Packing, Tokenizer: ic.Tokenizer, InvalidUTF8: ic.InvalidUTF8})
	if err != nil {
		return "", fmt.Errorf("run: held-out corpus: %w", err)
	}
	return dir, nil
}

package pipelines

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/emopipe/emopipe"
	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/model"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/tokenize"
	"github.com/emopipe/emopipe/train"
)

// runCfg is an embedded run of a very small EMO model on the bundled
// corpus.
func runCfg(t *testing.T, dir string, steps int) RunConfig {
	t.Helper()
	tok, err := tokenize.Bundled("dolma2-8k")
	if err != nil {
		t.Fatal(err)
	}
	pc := packing.DefaultConfig()
	pc.SeqLen = 65
	tc := train.DefaultConfig()
	tc.Model = model.Tiny()
	tc.Model.VocabSize = 0
	tc.Model.DModel, tc.Model.NHeads, tc.Model.ExpertHidden, tc.Model.NumExperts, tc.Model.PoolMax = 32, 2, 32, 8, 7
	tc.Model.PoolMin, tc.Model.EvalPoolSize = 2, 2
	tc.Steps, tc.Batch, tc.CheckpointEvery, tc.EvalEvery = steps, 4, 3, 0
	return RunConfig{
		Ingest:    IngestConfig{Store: dir, Kafka: ingest.DefaultKafkaConfig(), Packing: pc, Tokenizer: tok, CommitInterval: 100 * time.Millisecond, Log: testLog{t}},
		Embedded:  EmbeddedConfig{Corpus: emopipe.SampleCorpus, Partitions: 2, Seed: 1},
		Train:     tc,
		ReportDir: "-",
		Log:       testLog{t},
	}
}

// trainedSeqs reads the sequences each logged step trained on.
func trainedSeqs(t *testing.T, dir string) ([]uint64, []train.StepMetrics) {
	t.Helper()
	steps, _, err := train.ReadMetricsLog(filepath.Join(dir, "train", "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for i, m := range steps {
		if m.Step != i+1 {
			t.Fatalf("metrics log line %d is step %d", i, m.Step)
		}
		seqs = append(seqs, m.Seqs...)
	}
	return seqs, steps
}

// A run stopped mid-way and started again trains on the stream's
// sequences once each, in commit order, none skipped; the resumed steps
// repeat the stopped run's losses bit for bit (same state, same data).
func TestRunTrainsEachStreamedSequenceOnceAcrossAStop(t *testing.T) {
	dir := t.TempDir()
	const steps = 10
	ctx, cancel := context.WithCancel(context.Background())
	cfg := runCfg(t, dir, steps)
	var before []train.StepMetrics
	cfg.Train.OnStep = func(m train.StepMetrics) {
		before = append(before, m)
		if m.Step == 5 {
			cancel() // a stop after step 5: step 5 is checkpointed
		}
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Train.Interrupted || res.Train.Steps != 5 {
		t.Fatalf("first run: %+v, want interrupted at step 5", res.Train)
	}

	cfg = runCfg(t, dir, steps)
	cfg.ReportDir = ""
	res, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Train.Resumed || res.Train.FromStep != 5 || res.Train.Steps != steps {
		t.Fatalf("second run: %+v, want resumed at 5 and run to %d", res.Train, steps)
	}
	seqs, logged := trainedSeqs(t, dir)
	for i, n := range seqs {
		if n != uint64(i) {
			t.Fatalf("trained sequence %d is store sequence %d: a following trainer reads each once, in order", i, n)
		}
	}
	if len(seqs) != steps*cfg.Train.Batch {
		t.Fatalf("trained %d sequences in %d steps of %d", len(seqs), steps, cfg.Train.Batch)
	}
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	state, _, err := train.LoadState(st)
	if err != nil {
		t.Fatal(err)
	}
	if !state.Cursor.Follow || state.Cursor.Pos != uint64(len(seqs)) {
		t.Fatalf("trainer cursor %+v after %d sequences", state.Cursor, len(seqs))
	}
	for i, m := range before[:5] {
		if logged[i].Loss != m.Loss {
			t.Fatalf("step %d: loss %v in the log, %v when it ran", m.Step, logged[i].Loss, m.Loss)
		}
	}
	if res.Report == nil || res.Report.Steps != steps || res.Report.SequencesTrained != uint64(len(seqs)) {
		t.Fatalf("report %+v", res.Report)
	}
}

// A trainer that has read everything the stream delivered waits for
// more; when the stream ends (idle exit) it trains what came and stops.
func TestRunEndsWhenTheStreamEndsAndTheTrainerHasCaughtUp(t *testing.T) {
	dir := t.TempDir()
	cfg := runCfg(t, dir, 1000000)
	cfg.Embedded.Corpus = smallCorpus(t, 12)
	cfg.Ingest.IdleExit = 2 * time.Second
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Train.CaughtUp || res.Train.Interrupted {
		t.Fatalf("result %+v, want caught up", res.Train)
	}
	seqs, _ := trainedSeqs(t, dir)
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := st.NumSequences()
	// Every full batch the stream delivered is trained; the rest waits.
	if b := uint64(cfg.Train.Batch); uint64(len(seqs)) != n/b*b {
		t.Fatalf("trained %d of %d sequences in batches of %d", len(seqs), n, b)
	}
	if len(seqs) == 0 {
		t.Fatal("nothing trained")
	}
}

// Ingestion pauses while the trainer is MaxBacklog sequences behind: the
// store does not swallow the whole stream ahead of a slow trainer.
func TestRunThrottlesIngestionToTheTrainer(t *testing.T) {
	dir := t.TempDir()
	cfg := runCfg(t, dir, 6)
	cfg.MaxBacklog = 32
	cfg.Ingest.FetchMax = 4
	cfg.Metrics = NewMetrics()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	trained := uint64(res.Train.Steps * cfg.Train.Batch)
	// Per partition, an uncommitted batch (CommitSequences, MaxBacklog/4
	// here) and one fetch (FetchMax documents of at most maxDoc sequences
	// each) may land after the bound is reached.
	var maxDoc uint64
	st.Docs(func(d store.DocRecord) error {
		maxDoc = max(maxDoc, uint64(d.Tokens)/64+2)
		return nil
	})
	bound := trained + uint64(cfg.MaxBacklog) + 2*(uint64(cfg.MaxBacklog/4)+uint64(cfg.Ingest.FetchMax)*maxDoc)
	if n := st.NumSequences(); n > bound {
		t.Fatalf("store holds %d sequences with %d trained, backlog bound %d: more than %d", n, trained, cfg.MaxBacklog, bound)
	}
	if cfg.Metrics.Get("emopipe_run_throttled_seconds_total") == 0 {
		t.Fatal("ingestion never waited for the trainer")
	}
	// One /metrics for both halves.
	var buf bytes.Buffer
	cfg.Metrics.WriteTo(&buf)
	for _, name := range []string{"emopipe_ingest_documents_total", "emopipe_train_step", "emopipe_train_loss", "emopipe_run_backlog_sequences"} {
		if !bytes.Contains(buf.Bytes(), []byte("\n"+name)) {
			t.Fatalf("/metrics lacks %s:\n%s", name, buf.String())
		}
	}
	if got := st.Stats().Docs; got >= 630 {
		t.Fatalf("all %d documents ingested ahead of a trainer that took %d sequences", got, trained)
	}
}

// smallCorpus is the first n documents of the bundled corpus.
func smallCorpus(t *testing.T, n int) []byte {
	t.Helper()
	keys, values, err := corpusRecords(emopipe.SampleCorpus)
	if err != nil || len(keys) < n {
		t.Fatal(errors.Join(err, errors.New("corpus too small")))
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, v := range values[:n] {
		zw.Write(append(v, '\n'))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/tokenize"

	"github.com/emopipe/emopipe/internal/procstat"
)

// BenchIngestConfig configures BenchIngest.
type BenchIngestConfig struct {
	Kafka      ingest.KafkaConfig // brokers; the topic is made per run
	Inputs     []string           // JSONL/text files: the data
	Tokenizer  *tokenize.Tokenizer
	SeqLen     int
	Partitions int
	// LagRate is the records/s of the paced phase that measures end-to-end
	// lag (0: half the measured ingest rate); LagSeconds its length.
	LagRate    float64
	LagSeconds int
	// Copies repeats the data (with fresh ids) so that the timed phase
	// lasts longer. Default 1.
	Copies int
	// SplitBytes, if set, cuts each text into documents of about that
	// many bytes (at the first line end past it): short records, whose
	// per-record costs (Kafka, parsing, the document index) weigh more
	// than per-byte ones.
	SplitBytes int
	// Rounds is how many ingest runs (each a fresh group and store over
	// the same topic) alternate with tokenize-only passes; the ratio
	// compares the best of each, and the medians are reported too.
	// Default 3.
	Rounds int
	// Compression is the producer's codec (default lz4): the ingester
	// pays for decompressing it.
	Compression string
	// Order is the documents' order: "shuffled" (the default: a seeded
	// shuffle, the same every run) or "files" (as the inputs hold them).
	Order string
	// Warmup is how many untimed runs of the data path alone go before
	// the rounds (default 0). A broker started minutes ago still spends
	// CPU compiling its Java code (the JIT: measured here up to 0.24 CPU-s
	// in one 22 MB run, against 0.03 for serving the fetches) and, on a
	// small machine, takes it from the tokenizer; a long-running broker
	// does not. Warm-up runs measure the steady state.
	Warmup int
	// Workers lists the tokenizer goroutine counts to measure, each as a
	// series of its own (tokenize-only on EncodeBatchN with that many, the
	// ingester with TokenizerWorkers that many), the series' runs
	// interleaved. Default: GOMAXPROCS, and GOMAXPROCS-1 when that is at
	// least 1. All cores answer "what does Kafka + Badger cost in CPU";
	// one core left answers "are they the bottleneck" (they have a core
	// to run on, as they would beside a tokenizer that has the rest).
	Workers []int
	// TokenizerPriority is the ingester's (IngestConfig): with it, a
	// series that leaves cores over also runs its tokenize-only pass on a
	// reserved thread, so that both tokenizers run at the same priority.
	TokenizerPriority bool
	Log               io.Writer
}

// BenchIngestResult is one run's figures.
type BenchIngestResult struct {
	Docs, Bytes int
	Rounds      int
	Series      []BenchSeries
	// The paced phase, on the first series' tokenizer goroutines.
	LagRate               float64
	LagMeanSec, LagMaxSec float64
	LagDocs               int
	Partitions, SeqLen    int
	Tokenizer             string
	Compression           string
	Order                 string
	Priority              bool // BenchIngestConfig.TokenizerPriority
	// Path is the data path alone (Kafka → decode → pack → Badger, the
	// ids precomputed), a run per round: its IngestSeconds, IngestMBps,
	// IngestCPU, IngestMachineCPU are those of its fastest run. It bounds
	// what Kafka and Badger let the ingester do whatever the tokenizer.
	Path BenchSeries
	// Warmup is the number of untimed warm-up runs; WarmupOtherCPU the
	// CPU-s of the other processes (the broker) in each, from the first
	// record to the last commit.
	Warmup         int
	WarmupOtherCPU []float64

	sequences int // written by every run (they must agree)
}

// BenchSeries is the figures of one tokenizer goroutine count.
type BenchSeries struct {
	Workers          int
	TokenizeSeconds  float64 // fastest tokenize-only pass
	TokenizeMBps     float64
	IngestSeconds    float64 // fastest ingest run
	IngestDocsPerSec float64
	IngestMBps       float64
	Ratio            float64 // best ingest MB/s ÷ best tokenize-only MB/s
	// RatioMedian is median ingest MB/s ÷ median tokenize-only MB/s.
	RatioMedian float64
	// RatioPaired is the median over ingest runs of each run's ratio to
	// the mean of the two tokenize-only passes either side of it: on a VM
	// whose speed drifts, neighbours in time see the most similar machine.
	RatioPaired float64
	// CPU seconds of this process: the fastest tokenize-only pass, and the
	// fastest ingest run (sampled every 10 ms). Their ratio is the CPU
	// cost of everything but tokenizing, and depends less on other load
	// than Ratio does.
	TokenizeCPU, IngestCPU float64
	// The same, for all processes of the machine (the broker's included,
	// anything else running too); 0 where not measured.
	TokenizeMachineCPU, IngestMachineCPU float64
	// The ratio split in two factors (their product is Ratio):
	// TokenizerBusy is the share of the fastest ingest run in which its
	// tokenizer goroutines held text (busy seconds ÷ workers × run):
	// under 1 by what Kafka, decoding, packing or Badger made them wait.
	// TokenizingSpeed is how fast they tokenized while busy, against the
	// fastest tokenize-only pass (workers × its seconds ÷ busy seconds):
	// under 1 when tokenizing beside the stream is slower (cores or
	// memory shared with it).
	TokenizerBusy, TokenizingSpeed float64
	// With tokenizer priority the tokenizer's threads are known, and the
	// kernel's counters split TokenizingSpeed further: TokenizerOnCPU is
	// the share of the busy time the threads were on a CPU (the rest they
	// waited for one, or slept while Go handed the locked goroutine back),
	// TokenizerCPUSpeed how fast they tokenized per CPU second against the
	// tokenize-only pass (its threads' CPU time ÷ the ingest run's). Their
	// product is TokenizingSpeed but for the tokenize-only pass's own
	// waits. Zero where not measured.
	TokenizerOnCPU, TokenizerCPUSpeed float64
	// TokenizerWait is the share of the busy time the threads were
	// runnable and waiting for a CPU (schedstat).
	TokenizerWait float64

	tokSecs, ingSecs []float64
	busyAtBest       float64
	tokThreadCPU     time.Duration // reserved threads' CPU time in the fastest tokenize-only pass
	ingThreadCPU     time.Duration // and in the fastest ingest run
	ingThreadWait    time.Duration
	lastOtherCPU     float64 // CPU-s of other processes in the latest ingest run
}

// BenchIngest measures, in one run on the same data: tokenize-only
// throughput (EncodeBatchN over the texts in ingest-sized batches) and the
// sustained throughput of the whole Kafka → tokenize → pack → Badger path
// against a real broker, then the end-to-end lag of a paced stream.
func BenchIngest(ctx context.Context, cfg BenchIngestConfig) (*BenchIngestResult, error) {
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	files, err := ingest.ExpandPaths(cfg.Inputs)
	if err != nil {
		return nil, err
	}
	var values [][]byte
	var texts, domains []string
	src := ingest.NewFileSource(files, ingest.DefaultFileConfig(), ingest.FilePos{})
	for {
		it, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if it.Doc == nil {
			continue
		}
		for _, t := range splitText(string(it.Doc.Text), cfg.SplitBytes) {
			// Blank texts are the ingester's rejects (empty_text), not data.
			if strings.TrimSpace(t) != "" {
				texts = append(texts, t)
				domains = append(domains, it.Doc.Domain)
			}
		}
	}
	src.Close()
	if len(texts) == 0 {
		return nil, fmt.Errorf("bench: no documents with text in %s", strings.Join(cfg.Inputs, ", "))
	}
	// A stream mixes its sources, and the corpus files hold one domain
	// each. In file order the tokenize-only pass reads each domain in one
	// run (about 3 MB of the real corpus), its pretoken cache serving one
	// domain's pieces at a time, while the ingester's partitions, each at
	// its own point of the topic, hand their batches over in turn: in a
	// 222 MB run its tokenizer met a new domain every 0.44 MB on average
	// against every 3.2 MB. The order alone then favours tokenize-only
	// (docs/benchmarks.md, eighteenth session). Shuffled, both see the
	// documents mixed, as a stream brings them.
	switch cfg.Order {
	case "", "shuffled":
		cfg.Order = "shuffled"
		shuffleDocs(texts, domains)
	case "files":
	default:
		return nil, fmt.Errorf("bench: order %q: want shuffled or files", cfg.Order)
	}
	if cfg.Copies <= 0 {
		cfg.Copies = 1
	}
	n := len(texts)
	for c := 1; c < cfg.Copies; c++ {
		texts = append(texts, texts[:n]...)
		domains = append(domains, domains[:n]...)
	}
	for i := range texts {
		v, _ := json.Marshal(map[string]string{"id": fmt.Sprintf("bench-%d", i), "text": texts[i], "domain": domains[i]})
		values = append(values, v)
	}
	r := &BenchIngestResult{Docs: len(texts), Partitions: cfg.Partitions, SeqLen: cfg.SeqLen, Tokenizer: cfg.Tokenizer.Name()}
	for _, t := range texts {
		r.Bytes += len(t)
	}

	// Tokenize only, batches of the ingester's fetch size, each pass on a
	// freshly loaded tokenizer: its pretoken cache starts cold, as the
	// ingester's does (a warm cache on the same text would flatter it).
	// Passes alternate with the ingest runs (tokenize, ingest, ...,
	// tokenize), so that both see the same machine, and both are
	// summarised alike: best and median. (Best of several tokenize passes
	// against one ingest run understated the ratio on this shared VM, whose
	// speed varies by 10-40% from run to run.)
	fresh := func() (*tokenize.Tokenizer, error) {
		js, err := cfg.Tokenizer.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return tokenize.Parse(js, cfg.Tokenizer.Name())
	}
	if len(cfg.Workers) == 0 {
		n := runtime.GOMAXPROCS(0)
		cfg.Workers = []int{n}
		if n > 1 {
			cfg.Workers = append(cfg.Workers, n-1)
		}
	}
	for _, w := range cfg.Workers {
		if w <= 0 {
			return nil, fmt.Errorf("bench: %d tokenizer workers", w)
		}
		r.Series = append(r.Series, BenchSeries{Workers: w})
	}
	const batch = 2000
	tokenizeOnly := func(se *BenchSeries) error {
		defer pprof.SetGoroutineLabels(ctx)
		pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("bench", "tokenize", "workers", strconv.Itoa(se.Workers))))
		tok, err := fresh()
		if err != nil {
			return err
		}
		t0, c0, m0 := time.Now(), procstat.CPU(), procstat.Machine()
		r0, _, _ := reservedSchedstat()
		if prioritized(cfg.TokenizerPriority, se.Workers) {
			if err := priorityPass(tok, texts, se.Workers); err != nil {
				return fmt.Errorf("bench: tokenize-only pass: %w", err)
			}
		} else {
			for i := 0; i < len(texts); i += batch {
				tok.EncodeBatchN(texts[i:min(i+batch, len(texts))], se.Workers)
			}
		}
		s := time.Since(t0).Seconds()
		r1, _, _ := reservedSchedstat()
		se.tokSecs = append(se.tokSecs, s)
		if se.TokenizeSeconds == 0 || s < se.TokenizeSeconds {
			se.TokenizeSeconds = s
			se.tokThreadCPU = r1 - r0
			se.TokenizeCPU = (procstat.CPU() - c0).Seconds()
			se.TokenizeMachineCPU = (procstat.Machine() - m0).Seconds()
		}
		return nil
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 3
	}
	if cfg.Compression == "" {
		cfg.Compression = "lz4"
	}
	r.Compression = cfg.Compression
	r.Order = cfg.Order
	r.Priority = cfg.TokenizerPriority
	r.Rounds = cfg.Rounds

	// Whole path: produce everything first, then time the ingester from
	// its start to its last final commit.
	kc := cfg.Kafka
	kc.Topic = fmt.Sprintf("bench-%d", time.Now().UnixNano())
	kc.Group = kc.Topic
	if err := kc.CreateTopic(ctx, kc.Topic, cfg.Partitions); err != nil {
		return nil, err
	}
	// The topics hold copies of the corpus (about a GB at --copies 30):
	// left behind, repeated runs fill the broker's disk.
	dropTopic := func(topic string) {
		if err := kc.DeleteTopic(context.WithoutCancel(ctx), topic); err != nil {
			fmt.Fprintf(cfg.Log, "bench: %v\n", err)
		}
	}
	defer dropTopic(kc.Topic)
	fmt.Fprintf(cfg.Log, "bench: producing %d records (%s) to %s\n", len(values), HumanBytes(int64(r.Bytes)), kc.Topic)
	p, err := kc.NewProducer(kc.Topic, cfg.Compression)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(values); i += 1000 {
		if err := p.Write(ctx, nil, values[i:min(i+1000, len(values))]); err != nil {
			return nil, err
		}
	}
	p.Close()
	dir, err := os.MkdirTemp("", "emopipe-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pc := packing.DefaultConfig()
	pc.SeqLen = cfg.SeqLen
	var icfg IngestConfig
	// One ingest run: a fresh group and store over the produced topic, so
	// each run reads every record from offset 0 (the store's offsets).
	// With pre set, the run is the data path alone: the pool hands out
	// those ids instead of tokenizing.
	// name names the run's group and store.
	ingestOnce := func(se *BenchSeries, name string, pre map[string][]uint32) error {
		m := NewMetrics()
		itok, err := fresh()
		if err != nil {
			return err
		}
		phase := "ingest"
		if pre != nil {
			phase = "path"
		}
		rk := kc
		rk.Group = kc.Topic + "-" + name
		icfg = IngestConfig{Store: filepath.Join(dir, "store-"+name), Kafka: rk, Packing: pc, Tokenizer: itok,
			TokenizerWorkers: se.Workers, TokenizerPriority: cfg.TokenizerPriority, IdleExit: 4 * time.Second, Metrics: m, Log: cfg.Log, pretokenized: pre}
		defer os.RemoveAll(icfg.Store)
		// The phases carry pprof labels, so that an EMOPIPE_CPUPROFILE of
		// the whole benchmark splits into them (go tool pprof -tagfocus
		// bench=ingest).
		cpu := sampleCPU(ctx, 10*time.Millisecond)
		r0, w0, _ := reservedSchedstat()
		pprof.Do(ctx, pprof.Labels("bench", phase, "workers", strconv.Itoa(se.Workers)), func(ctx context.Context) { err = Ingest(ctx, icfg) })
		r1, w1, _ := reservedSchedstat()
		samples := cpu()
		if err != nil {
			return err
		}
		if got := int(m.Sum("emopipe_ingest_documents_total")); got != len(texts) {
			return fmt.Errorf("bench: ingested %d documents of %d", got, len(texts))
		}
		// The data path alone must write what the whole path writes.
		seqs := int(m.Sum("emopipe_ingest_sequences_total"))
		if r.sequences == 0 {
			r.sequences = seqs
		} else if seqs != r.sequences {
			return fmt.Errorf("bench: %s wrote %d sequences, another run %d", name, seqs, r.sequences)
		}
		// From the first record read (group join excluded) to the last commit.
		first, last := m.Get("emopipe_ingest_first_record_unixtime"), m.Get("emopipe_ingest_last_commit_unixtime")
		s := last - first
		se.ingSecs = append(se.ingSecs, s)
		if se.IngestSeconds == 0 || s < se.IngestSeconds {
			se.IngestSeconds = s
			se.IngestCPU = (samples.at(last).cpu - samples.at(first).cpu).Seconds()
			se.IngestMachineCPU = (samples.at(last).machine - samples.at(first).machine).Seconds()
			se.busyAtBest = m.Get("emopipe_ingest_tokenizer_busy_seconds_total")
			se.ingThreadCPU, se.ingThreadWait = r1-r0, w1-w0
		}
		se.lastOtherCPU = (samples.at(last).machine - samples.at(first).machine - samples.at(last).cpu + samples.at(first).cpu).Seconds()
		return nil
	}
	// The ids of every text, for the runs of the data path alone.
	pre := make(map[string][]uint32, n)
	for i, ids := range cfg.Tokenizer.EncodeBatch(texts[:n]) {
		pre[texts[i]] = ids
	}
	// Reserve the priority threads before any pass: a thread's kernel
	// counters include what it ran before it was reserved, so one reserved
	// in the middle of a measured pass would count that too.
	reserve := 0
	for _, se := range r.Series {
		if prioritized(cfg.TokenizerPriority, se.Workers) {
			reserve = max(reserve, se.Workers)
		}
	}
	if reserve > 0 {
		priorityPass(cfg.Tokenizer, nil, reserve) // nothing to tokenize: it only reserves
	}
	r.Warmup = cfg.Warmup
	for i := range cfg.Warmup {
		var w BenchSeries
		if err := ingestOnce(&w, fmt.Sprintf("warmup-%d", i), pre); err != nil {
			return nil, err
		}
		r.WarmupOtherCPU = append(r.WarmupOtherCPU, w.lastOtherCPU)
		fmt.Fprintf(cfg.Log, "bench: warm-up %d/%d, data path alone: %.2f s; CPU-s of other processes (the broker) %.2f\n",
			i+1, cfg.Warmup, w.ingSecs[0], w.lastOtherCPU)
	}
	r.Path = BenchSeries{Workers: runtime.GOMAXPROCS(0)}
	for round := range cfg.Rounds {
		for i := range r.Series {
			se := &r.Series[i]
			if err := tokenizeOnly(se); err != nil {
				return nil, err
			}
			if err := ingestOnce(se, fmt.Sprintf("w%d-r%d", se.Workers, round), nil); err != nil {
				return nil, err
			}
			fmt.Fprintf(cfg.Log, "bench: round %d/%d, %d tokenizer goroutines: tokenize-only %.2f s, ingest %.2f s; CPU-s of other processes %.2f\n",
				round+1, cfg.Rounds, se.Workers, se.tokSecs[len(se.tokSecs)-1], se.ingSecs[len(se.ingSecs)-1], se.lastOtherCPU)
		}
		if err := ingestOnce(&r.Path, fmt.Sprintf("path-r%d", round), pre); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Log, "bench: round %d/%d, data path alone: %.2f s; CPU-s of other processes %.2f\n",
			round+1, cfg.Rounds, r.Path.ingSecs[len(r.Path.ingSecs)-1], r.Path.lastOtherCPU)
	}
	r.Path.setRates(len(texts), r.Bytes)
	for i := range r.Series {
		se := &r.Series[i]
		if err := tokenizeOnly(se); err != nil {
			return nil, err
		}
		se.TokenizeMBps = float64(r.Bytes) / 1e6 / se.TokenizeSeconds
		se.setRates(len(texts), r.Bytes)
		se.Ratio = se.IngestMBps / se.TokenizeMBps
		se.RatioMedian = median(se.tokSecs) / median(se.ingSecs)
		se.RatioPaired = pairedRatio(se.tokSecs, se.ingSecs)
		if se.busyAtBest > 0 {
			se.TokenizerBusy = se.busyAtBest / (float64(se.Workers) * se.IngestSeconds)
			se.TokenizingSpeed = float64(se.Workers) * se.TokenizeSeconds / se.busyAtBest
		}
		if prioritized(r.Priority, se.Workers) && se.busyAtBest > 0 && se.tokThreadCPU > 0 && se.ingThreadCPU > 0 {
			se.TokenizerOnCPU = se.ingThreadCPU.Seconds() / se.busyAtBest
			se.TokenizerWait = se.ingThreadWait.Seconds() / se.busyAtBest
			se.TokenizerCPUSpeed = se.tokThreadCPU.Seconds() / se.ingThreadCPU.Seconds()
		}
	}

	// Paced stream: end-to-end lag from Kafka timestamp to final commit.
	r.LagRate = cfg.LagRate
	if r.LagRate <= 0 {
		r.LagRate = r.Series[0].IngestDocsPerSec / 2
	}
	if cfg.LagSeconds <= 0 {
		cfg.LagSeconds = 20
	}
	kc.Topic = kc.Topic + "-paced"
	kc.Group = kc.Topic
	if err := kc.CreateTopic(ctx, kc.Topic, cfg.Partitions); err != nil {
		return nil, err
	}
	defer dropTopic(kc.Topic)
	m := NewMetrics()
	icfg.Kafka, icfg.Metrics, icfg.Store = kc, m, filepath.Join(dir, "paced")
	icfg.TokenizerWorkers = r.Series[0].Workers
	icfg.IdleExit = 6 * time.Second
	done := make(chan error, 1)
	go pprof.Do(ctx, pprof.Labels("bench", "lag"), func(ctx context.Context) { done <- Ingest(ctx, icfg) })
	time.Sleep(3 * time.Second) // let the member join before the clock starts
	p, err = kc.NewProducer(kc.Topic, cfg.Compression)
	if err != nil {
		return nil, err
	}
	tick := 100 * time.Millisecond
	per := max(1, int(r.LagRate*tick.Seconds()))
	sent := 0
	for deadline := time.Now().Add(time.Duration(cfg.LagSeconds) * time.Second); time.Now().Before(deadline); {
		t := time.Now()
		chunk := make([][]byte, 0, per)
		for j := 0; j < per; j++ {
			k := (sent + j) % n
			v, _ := json.Marshal(map[string]string{"id": fmt.Sprintf("paced-%d", sent+j), "text": texts[k], "domain": domains[k]})
			chunk = append(chunk, v)
		}
		if err := p.Write(ctx, nil, chunk); err != nil {
			return nil, err
		}
		sent += per
		time.Sleep(tick - time.Since(t))
	}
	p.Close()
	if err := <-done; err != nil {
		return nil, err
	}
	if n := m.Get("emopipe_ingest_e2e_lag_seconds_count"); n > 0 {
		r.LagDocs = int(n)
		r.LagMeanSec = m.Get("emopipe_ingest_e2e_lag_seconds_sum") / n
		r.LagMaxSec = m.Get("emopipe_ingest_e2e_lag_seconds_max")
	}
	return r, nil
}

// priorityPass is the tokenize-only pass on workers threads of the
// ingester's priority (newTokenPool): the documents taken a few at a time
// in turn, as EncodeBatchN takes them, and kept in an Encoder's slabs, as
// EncodeBatchN keeps them.
func priorityPass(tok *tokenize.Tokenizer, texts []string, workers int) error {
	const step = 16
	var next atomic.Int64
	var wg sync.WaitGroup
	fns := make([]func(), workers)
	for i := range fns {
		fns[i] = func() {
			defer wg.Done()
			enc := tok.NewEncoder()
			defer enc.Close()
			for {
				lo := int(next.Add(step)) - step
				if lo >= len(texts) {
					return
				}
				for _, t := range texts[lo:min(lo+step, len(texts))] {
					enc.Encode(t)
				}
			}
		}
	}
	wg.Add(workers)
	_, release, err := priorityThreads(fns)
	wg.Wait()
	release()
	return err
}

// setRates derives the fastest ingest run's docs/s and MB/s.
func (se *BenchSeries) setRates(docs, bytes int) {
	se.IngestDocsPerSec = float64(docs) / se.IngestSeconds
	se.IngestMBps = float64(bytes) / 1e6 / se.IngestSeconds
}

// splitText cuts t into pieces that end at the first line end at least n
// bytes into them (the last piece may be shorter); n <= 0 keeps t whole.
func splitText(t string, n int) []string {
	if n <= 0 {
		return []string{t}
	}
	var out []string
	for len(t) > 0 {
		end := len(t)
		if n < len(t) {
			if j := strings.IndexByte(t[n:], '\n'); j >= 0 {
				end = n + j + 1
			}
		}
		out = append(out, t[:end])
		t = t[end:]
	}
	return out
}

// shuffleDocs puts texts (and their domains, alike) in a random order
// that is the same every run.
func shuffleDocs(texts, domains []string) {
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(texts), func(i, j int) {
		texts[i], texts[j] = texts[j], texts[i]
		domains[i], domains[j] = domains[j], domains[i]
	})
}

// pairedRatio is the median of (tok[i]+tok[i+1])/2 ÷ ing[i]: ingest run i
// ran between tokenize-only passes i and i+1.
func pairedRatio(tok, ing []float64) float64 {
	var r []float64
	for i, s := range ing {
		if i+1 < len(tok) && s > 0 {
			r = append(r, (tok[i]+tok[i+1])/2/s)
		}
	}
	if len(r) == 0 {
		return 0
	}
	return median(r)
}

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// cpuSample is the process's and the machine's CPU at a unix time.
type cpuSample struct {
	t            float64
	cpu, machine time.Duration
}

// cpuSamples are samples in time order.
type cpuSamples []cpuSample

// at is the sample last taken before unix time t.
func (s cpuSamples) at(t float64) cpuSample {
	var c cpuSample
	for _, x := range s {
		if x.t > t {
			break
		}
		c = x
	}
	return c
}

// sampleCPU samples the process's and the machine's CPU every period until
// the returned function is called; that returns the samples.
func sampleCPU(ctx context.Context, period time.Duration) func() cpuSamples {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan cpuSamples)
	go func() {
		var s cpuSamples
		add := func() {
			s = append(s, cpuSample{float64(time.Now().UnixNano()) / 1e9, procstat.CPU(), procstat.Machine()})
		}
		add()
		every(ctx, period, func() bool { add(); return true })
		add()
		done <- s
	}()
	return func() cpuSamples { cancel(); return <-done }
}

// Markdown renders the result as the table docs/benchmarks.md keeps: a
// column per tokenizer goroutine count.
func (r *BenchIngestResult) Markdown() string {
	var b strings.Builder
	row := func(label string, f func(se *BenchSeries) string) {
		b.WriteString("| " + label)
		for i := range r.Series {
			b.WriteString(" | " + f(&r.Series[i]))
		}
		b.WriteString(" |\n")
	}
	order := "in a seeded random order"
	if r.Order == "files" {
		order = "in file order"
	}
	fmt.Fprintf(&b, "%d documents (%.0f bytes each on average), %.1f MB (real corpus %s, repeated with fresh ids); Kafka (%s), %d partitions, seq_len %d; %s tokenizer, cold cache; %d ingest runs per column, alternating with tokenize-only passes.\n\n",
		r.Docs, float64(r.Bytes)/float64(max(r.Docs, 1)), float64(r.Bytes)/1e6, order, r.Compression, r.Partitions, r.SeqLen, r.Tokenizer, r.Rounds)
	if r.Warmup > 0 {
		other := make([]string, len(r.WarmupOtherCPU))
		for i, c := range r.WarmupOtherCPU {
			other[i] = fmt.Sprintf("%.2f", c)
		}
		fmt.Fprintf(&b, "Before the rounds, %d untimed warm-up runs of the data path, for the broker's JIT to settle; CPU-s of the other processes (the broker) in each: %s.\n\n",
			r.Warmup, strings.Join(other, ", "))
	}
	row("tokenizer goroutines", func(se *BenchSeries) string {
		if se.Workers == runtime.GOMAXPROCS(0) {
			return fmt.Sprintf("%d (all cores)", se.Workers)
		}
		return fmt.Sprintf("%d of %d cores", se.Workers, runtime.GOMAXPROCS(0))
	})
	b.WriteString("|---|" + strings.Repeat("---:|", len(r.Series)) + "\n")
	row("tokenize only (EncodeBatchN; with priority, an Encoder on each reserved thread), best pass", func(se *BenchSeries) string { return fmt.Sprintf("%.2f MB/s", se.TokenizeMBps) })
	row("tokenizer priority (threads of their own, the rest of the process at nice +10; both passes)", func(se *BenchSeries) string {
		if prioritized(r.Priority, se.Workers) {
			return "yes"
		}
		return "no"
	})
	row("Kafka → tokenize → pack → Badger, best run", func(se *BenchSeries) string {
		return fmt.Sprintf("%.2f MB/s, %.0f docs/s (%.2f s)", se.IngestMBps, se.IngestDocsPerSec, se.IngestSeconds)
	})
	row("**ratio ingest / tokenize-only, best / best** (target ≥ 0.9)", func(se *BenchSeries) string { return fmt.Sprintf("**%.2f**", se.Ratio) })
	row("ratio of the medians", func(se *BenchSeries) string { return fmt.Sprintf("%.2f", se.RatioMedian) })
	row("ratio of each ingest run to the tokenize-only passes either side of it, median", func(se *BenchSeries) string { return fmt.Sprintf("%.2f", se.RatioPaired) })
	row("= tokenizer goroutines busy (text in hand), share of the best run", func(se *BenchSeries) string { return fmt.Sprintf("%.1f%%", 100*se.TokenizerBusy) })
	row("× their tokenizing speed in it ÷ tokenize-only's", func(se *BenchSeries) string { return fmt.Sprintf("%.2f", se.TokenizingSpeed) })
	if slices.ContainsFunc(r.Series, func(se BenchSeries) bool { return se.TokenizerCPUSpeed > 0 }) {
		measured := func(v float64, f string) string {
			if v == 0 {
				return "n/a"
			}
			return fmt.Sprintf(f, v)
		}
		row("  of which: their threads on a CPU, share of the busy time (kernel's schedstat)", func(se *BenchSeries) string { return measured(100*se.TokenizerOnCPU, "%.1f%%") })
		row("  of which: runnable but waiting for a CPU, share of the busy time", func(se *BenchSeries) string { return measured(100*se.TokenizerWait, "%.1f%%") })
		row("  × tokenizing per CPU second ÷ tokenize-only's (threads' CPU time)", func(se *BenchSeries) string { return measured(se.TokenizerCPUSpeed, "%.3f") })
	}
	row("CPU-s of this process: tokenize only / ingest (ratio), fastest runs", func(se *BenchSeries) string {
		return fmt.Sprintf("%.2f / %.2f (%.2f)", se.TokenizeCPU, se.IngestCPU, se.TokenizeCPU/se.IngestCPU)
	})
	row("CPU-s of the whole machine (broker included), same runs", func(se *BenchSeries) string {
		if se.IngestMachineCPU == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f / %.2f (%.2f)", se.TokenizeMachineCPU, se.IngestMachineCPU, se.TokenizeMachineCPU/se.IngestMachineCPU)
	})
	if p := &r.Path; p.IngestSeconds > 0 && len(r.Series) > 0 {
		se := &r.Series[0]
		fmt.Fprintf(&b, "\nData path alone (Kafka → decode → pack → Badger, the ids precomputed; the same sequences), best of %d runs: %.2f MB/s, %.0f docs/s (%.2f s), **%.1f× the tokenize-only throughput on %d goroutines**; CPU-s %.2f (this process), %.2f (machine).\n",
			r.Rounds, p.IngestMBps, p.IngestDocsPerSec, p.IngestSeconds, p.IngestMBps/se.TokenizeMBps, se.Workers, p.IngestCPU, p.IngestMachineCPU)
		tok, path := se.TokenizeCPU, p.IngestCPU
		if se.TokenizeMachineCPU > 0 && p.IngestMachineCPU > 0 {
			tok, path = se.TokenizeMachineCPU, p.IngestMachineCPU
		}
		fmt.Fprintf(&b, "\nWhen tokenizing and the data path share all cores, the ratio can reach at most tokenize CPU-s ÷ (tokenize + data path CPU-s) = %.2f ÷ (%.2f + %.2f) = %.2f (measured: %.2f).\n",
			tok, tok, path, tok/(tok+path), se.Ratio)
	}
	fmt.Fprintf(&b, "\nEnd-to-end lag at %.0f docs/s, tokenizer on %d goroutines (Kafka timestamp → final commit, %d docs): mean %.2f s, max %.2f s.\n",
		r.LagRate, r.Series[0].Workers, r.LagDocs, r.LagMeanSec, r.LagMaxSec)
	return b.String()
}

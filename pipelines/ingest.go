package pipelines

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/emopipe/emopipe/ingest"
	"github.com/emopipe/emopipe/packing"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/tokenize"
)

// IngestConfig configures a Kafka → store ingester.
type IngestConfig struct {
	// Store is the store directory (Ingest opens it; NewIngester takes an
	// open store).
	Store     string
	Kafka     ingest.KafkaConfig
	Packing   packing.Config
	Tokenizer *tokenize.Tokenizer
	// TokenizerWorkers is how many goroutines tokenize, for all partitions
	// together (default GOMAXPROCS). Fewer leave cores to the rest of the
	// process or the machine: the trainer of emopipe run, a co-located
	// broker.
	TokenizerWorkers int
	// TokenizerPriority, with fewer TokenizerWorkers than GOMAXPROCS, runs
	// them on threads of their own and every other thread of the process
	// at nice +10 (Linux), so that the rest of the path uses the cores left
	// to it rather than the tokenizer's (priority_linux.go). The nice value
	// stays raised for the life of the process: for emopipe ingest, not for
	// a process that has other work to do (emopipe run's trainer).
	TokenizerPriority bool
	// InvalidUTF8 is reject (default) or replace.
	InvalidUTF8 UTF8Policy
	// DLQTopic receives rejected records; empty keeps them in the store.
	DLQTopic string
	// CommitInterval bounds how long read records wait before their commit
	// (default 1 s); CommitSequences commits earlier once that many
	// sequences wait (default 128). A partition's commit runs while its
	// next records are fetched and tokenized; its commits stay in order.
	CommitInterval  time.Duration
	CommitSequences int
	// FetchMax is the most records one fetch returns (default 2000), and
	// FetchMaxBytes the most bytes of record values (default 8 MiB: it
	// stops after the record that reaches it). They are handled 64 at a
	// time, or fewer that hold 2 MiB, each part followed by a commit if one
	// is due. Without the byte bounds a fetch of 2000 records of 900 KB
	// held 1.8 GB, and its text, ids and sequences at once: 1.7 GB of
	// memory for one partition of a 370 MB topic. A member owning more
	// than 4 partitions divides 32 MiB of fetches among them, at most
	// FetchMaxBytes each (shareReadAhead).
	FetchMax      int
	FetchMaxBytes int
	// IdleExit stops the ingester once no record has arrived for this long
	// (benchmarks, tests, one-off catch-up). Zero runs until cancelled.
	IdleExit time.Duration
	// StopGrace is how long a commit in flight may still take once the
	// caller has cancelled (a signal); default 10 s. A commit that has not
	// landed by then stays staged, and the next start settles it. Without
	// it, a stop while the broker was down waited out the commit's own
	// bound, 2 minutes of retries.
	StopGrace time.Duration
	Metrics   *Metrics
	Progress  io.Writer
	// Log receives one line per event worth knowing (generations,
	// retries); nil means stderr.
	Log io.Writer
	// Throttle, if set, is called before each fetch, once the partition's
	// commit in flight has settled; it blocks while the consumer of the
	// store is too far behind (emopipe run).
	Throttle func(ctx context.Context) error

	// pretokenized holds ids computed beforehand, by text: the tokenizer
	// pool hands those out instead of tokenizing (BenchIngest's run of
	// the data path alone, which must write the same sequences).
	pretokenized map[string][]uint32
}

func (c *IngestConfig) defaults() error {
	if c.Tokenizer == nil {
		return errors.New("ingest: no tokenizer")
	}
	if c.InvalidUTF8 == "" {
		c.InvalidUTF8 = UTF8Reject
	}
	if err := c.InvalidUTF8.Validate(); err != nil {
		return err
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = time.Second
	}
	if c.CommitSequences <= 0 {
		c.CommitSequences = 128
	}
	if c.FetchMax <= 0 {
		c.FetchMax = 2000
	}
	if c.FetchMaxBytes <= 0 {
		c.FetchMaxBytes = 8 << 20
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
	c.Kafka.Repair = c.InvalidUTF8.Repair()
	return c.Kafka.Validate()
}

// partitionState is a Kafka partition's resume state in the store.
type partitionState struct {
	Next int64  `json:"next"` // next offset to read
	Tail []byte `json:"tail,omitempty"`
	// Last is the last record read. A restart reads from it again and
	// checks that it is the same record: a topic deleted and created
	// again, as long as the store had read or longer, was otherwise read
	// on from the old offset, its records before it never read.
	Last *recordMark `json:"last,omitempty"`
}

// recordMark identifies a record: its offset, and a checksum of its key,
// value and timestamp.
type recordMark struct {
	Offset int64  `json:"offset"`
	Sum    uint32 `json:"crc32c"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func markOf(r *ingest.Record) *recordMark {
	sum := crc32.Update(0, castagnoli, r.Key)
	sum = crc32.Update(sum, castagnoli, r.Value)
	var ms [8]byte
	binary.LittleEndian.PutUint64(ms[:], uint64(r.Time.UnixMilli()))
	sum = crc32.Update(sum, castagnoli, ms[:])
	return &recordMark{Offset: r.Offset, Sum: sum}
}

// Ingester consumes a topic in a consumer group into one store, exactly
// once: see packing/store/stage.go for the commit protocol.
type Ingester struct {
	cfg    IngestConfig
	st     *store.Store
	pc     packing.Config
	dlq    *ingest.DLQ
	m      *Metrics
	lastIn atomic.Int64 // unix nanos of the last record read or commit made
	busy   atomic.Int64 // partition workers handling records or committing
	// pending holds keys accepted by any partition but not yet final.
	pending *keySet
	group   *ingest.Group
	// tokens tokenizes for every partition, on TokenizerWorkers
	// goroutines (Run owns them).
	tokens *tokenPool
	// partitions holds a *sync.Mutex per partition, held by its worker.
	partitions sync.Map
	// commits bounds the commits in flight: it ends StopGrace after the
	// caller stops the ingester (Run's ctx), not when it stops itself
	// (idle, an error), so that a stop waits for a broker that is down
	// only that long.
	commits context.Context
	// generation is the ID of the generation this member holds, 0 while
	// it has none (joining, or rebalancing); joinErr holds the last error
	// joining the group (a string). Both for the idle exit.
	generation atomic.Int32
	joinErr    atomic.Value
	// unread holds, per partition whose last fetch failed, its error: the
	// idle exit is then an error, not a success short of the records.
	unread sync.Map
}

// Ingest opens the store and runs an ingester until ctx is cancelled (or
// IdleExit).
func Ingest(ctx context.Context, cfg IngestConfig) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	pc := PackingFor(cfg.Tokenizer, cfg.Packing)
	if err := pc.Validate(); err != nil {
		return err
	}
	hdr := HeaderFor(cfg.Tokenizer, pc)
	st, err := store.Open(cfg.Store, &hdr, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	in, err := NewIngester(st, cfg)
	if err != nil {
		return err
	}
	defer in.Close()
	return in.Run(ctx)
}

// NewIngester ingests into an open store whose header matches the
// tokenizer and packing config.
func NewIngester(st *store.Store, cfg IngestConfig) (*Ingester, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	pc := PackingFor(cfg.Tokenizer, cfg.Packing)
	if h := HeaderFor(cfg.Tokenizer, pc); h.TokenizerFingerprint != st.Header().TokenizerFingerprint || h.SeqLen != st.Header().SeqLen || h.Mode != st.Header().Mode {
		return nil, fmt.Errorf("ingest: %w: the store was made with another tokenizer or packing", store.ErrHeaderMismatch)
	}
	in := &Ingester{cfg: cfg, st: st, pc: pc, m: cfg.Metrics, pending: newKeySet()}
	if cfg.DLQTopic != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		d, err := cfg.Kafka.NewDLQ(ctx, cfg.DLQTopic)
		cancel()
		if err != nil {
			return nil, err
		}
		in.dlq = d
	}
	describeIngestMetrics(in.m)
	return in, nil
}

func describeIngestMetrics(m *Metrics) {
	m.Describe("emopipe_ingest_records_total", "counter", "Kafka records read, by partition.")
	m.Describe("emopipe_ingest_documents_total", "counter", "Documents accepted into the store.")
	m.Describe("emopipe_ingest_bytes_total", "counter", "Text bytes of accepted documents.")
	m.Describe("emopipe_ingest_tokens_total", "counter", "Tokens of accepted documents.")
	m.Describe("emopipe_ingest_sequences_total", "counter", "Sequences committed by the ingester.")
	m.Describe("emopipe_ingest_rejects_total", "counter", "Rejected records, by reason.")
	m.Describe("emopipe_ingest_lag_records", "gauge", "Records in the partition past the ingester.")
	m.Describe("emopipe_ingest_held_back_records", "gauge", "Offsets of the partition past its last stable offset: records after an open transaction, not readable at read_committed until it ends.")
	m.Describe("emopipe_ingest_commit_seconds_total", "counter", "Time spent in commits (stage, Kafka offset, finalize).")
	m.Describe("emopipe_ingest_commits_total", "counter", "Commits, by outcome (final, discarded).")
	m.Describe("emopipe_ingest_tokenizer_workers", "gauge", "Goroutines tokenizing for all partitions.")
	m.Describe("emopipe_ingest_tokenizer_busy_seconds_total", "counter", "Time the tokenizer goroutines spent tokenizing, summed; its rate over emopipe_ingest_tokenizer_workers near 1 means the tokenizer, not Kafka or the store, limits ingest.")
	m.Describe("emopipe_ingest_e2e_lag_seconds_sum", "counter", "Sum over documents of (commit time - Kafka record time).")
	m.Describe("emopipe_ingest_e2e_lag_seconds_count", "counter", "Documents in emopipe_ingest_e2e_lag_seconds_sum.")
	m.Describe("emopipe_ingest_e2e_lag_seconds_max", "gauge", "Largest end-to-end lag seen.")
	m.Describe("emopipe_ingest_last_commit_unixtime", "gauge", "When the last batch became final.")
	m.Describe("emopipe_ingest_first_record_unixtime", "gauge", "When the first record was read.")
}

// Close releases the dead-letter writer. Idempotent.
func (in *Ingester) Close() error { return in.dlq.Close() }

func (in *Ingester) logf(format string, a ...any) {
	fmt.Fprintf(in.cfg.Log, "ingest: "+format+"\n", a...)
}

// Run consumes until ctx is cancelled. Shutdown order: stop fetching,
// commit what was read (stage, offset, finalize), leave the group.
func (in *Ingester) Run(ctx context.Context) error {
	in.tokens = newTokenPool(in.cfg.Tokenizer, in.cfg.TokenizerWorkers, in.m, in.cfg.TokenizerPriority, in.cfg.pretokenized)
	defer in.tokens.close() // after the group's close has stopped the partition workers
	switch {
	case in.tokens.priority != nil:
		in.logf("tokenizer priority not had: %v", in.tokens.priority)
	case len(in.tokens.threads) > 0:
		in.logf("tokenizer workers on threads of their own: %d; the rest of the process at nice +%d", len(in.tokens.threads), restNice)
		defer func() {
			if err := priorityError(); err != nil {
				in.logf("tokenizer priority: %v", err)
			}
		}()
	}
	in.m.Set("emopipe_ingest_tokenizer_workers", float64(in.tokens.workers))
	in.lastIn.Store(time.Now().UnixNano())
	if err := in.waitForTopic(ctx); err != nil {
		return err
	}
	group, err := ingest.JoinGroup(&in.cfg.Kafka)
	if err != nil {
		return err
	}
	defer group.Close()
	in.group = group
	if err := in.resolveStaged(ctx); err != nil {
		return err
	}
	commits, endCommits := context.WithCancel(context.Background())
	defer endCommits()
	in.commits = commits
	// Stopped by the caller: StopGrace later, commits in flight give up.
	defer context.AfterFunc(ctx, func() { time.AfterFunc(in.cfg.StopGrace, endCommits) })()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	in.lastIn.Store(time.Now().UnixNano())
	if in.cfg.IdleExit > 0 {
		// Without a generation a member is not idle but waiting: the
		// coordinator holds a join while a member that died without
		// leaving (killed, or stopped while the broker was down) keeps its
		// session, and a rebalance may take its timeout. Counted as
		// idleness, a restart after a kill with a short --idle-exit ended
		// at once, status 0, having read nothing. So the wait gets those
		// timeouts too, and a group that never assigns is an error.
		kc := &in.cfg.Kafka
		joinWait := in.cfg.IdleExit + kc.SessionTimeout + kc.RebalanceTimeout
		go every(ctx, 100*time.Millisecond, func() bool {
			idle := time.Since(time.Unix(0, in.lastIn.Load()))
			switch {
			case in.busy.Load() != 0 || idle <= in.cfg.IdleExit:
				return true
			case in.generation.Load() != 0:
				cancel(in.unreadErr())
			case idle > joinWait:
				why := ""
				if e, _ := in.joinErr.Load().(string); e != "" {
					why = "; last error: " + e
				}
				cancel(fmt.Errorf("ingest: no generation from group %q on %s within %v (--idle-exit %v, plus the session and rebalance timeouts)%s",
					kc.Group, strings.Join(kc.Brokers, ","), joinWait.Round(time.Second), in.cfg.IdleExit, why))
			default:
				return true
			}
			return false
		})
	}
	prog := NewProgress(in.cfg.Progress)
	if in.cfg.Progress != nil {
		go every(ctx, 250*time.Millisecond, func() bool { prog.Update(in.progressLine); return true })
	}
	// kafka-go paces the join attempts itself (JoinGroupBackoff after each
	// failure) and hands over each outcome only when Next asks: a backoff
	// here on top would hold a generation that is already there (after a
	// broker restart it once doubled the pause, past --idle-exit). So only
	// the log is paced.
	var failures int
	var lastLog time.Time
	for ctx.Err() == nil {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if failures++; time.Since(lastLog) >= 10*time.Second {
				diag := in.cfg.Kafka.Diagnose(ctx, err)
				in.joinErr.Store(diag.Error())
				in.logf("joining group %q: %v (attempt %d, retrying)", in.cfg.Kafka.Group, diag, failures)
				lastLog = time.Now()
			}
			sleepCtx(ctx, 100*time.Millisecond) // a guard against a tight loop
			continue
		}
		failures, lastLog = 0, time.Time{}
		in.generation.Store(gen.ID)
		gen.Start(func(gctx context.Context) { // kafka-go ends the generation once this returns
			<-gctx.Done()
			in.generation.CompareAndSwap(gen.ID, 0)
		})
		owned := map[int]bool{}
		var parts []string
		for _, a := range gen.Partitions {
			owned[a.Partition] = true
			parts = append(parts, strconv.Itoa(a.Partition))
		}
		if len(gen.Partitions) == 0 && in.topicGone(ctx) {
			// kafka-go ends such generations at once: they came hundreds
			// a second, with nothing to say why.
			cancel(fmt.Errorf("ingest: topic %s no longer exists on %s (deleted while it was read?)", in.cfg.Kafka.Topic, strings.Join(in.cfg.Kafka.Brokers, ",")))
			break
		}
		in.logf("generation %d: member %s owns partitions [%s]", gen.ID, gen.MemberID, strings.Join(parts, " "))
		in.lastIn.Store(time.Now().UnixNano()) // idleness counts from the assignment, not the join
		if err := in.flushOrphanTails(owned); err != nil {
			cancel(err)
			break
		}
		for _, a := range gen.Partitions {
			gen.Start(func(gctx context.Context) {
				if err := in.partition(ctx, gctx, gen, a); err != nil {
					cancel(err)
				}
			})
		}
	}
	err = context.Cause(ctx)
	group.Close() // waits for the partition workers, then leaves at once
	prog.Done(in.progressLine())
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// unreadErr is how an idle exit ends: nil, or an error naming the lowest
// partition whose last fetch failed. Such a partition brings no record,
// so it looked idle, and with --idle-exit the run ended with status 0
// short of its records (a compacted batch the reader could not step over
// did that, and a partition whose leader is down would).
func (in *Ingester) unreadErr() error {
	part, cause := -1, error(nil)
	in.unread.Range(func(k, v any) bool {
		if p := k.(int); part < 0 || p < part {
			part, cause = p, v.(error)
		}
		return true
	})
	if part < 0 {
		return nil
	}
	return fmt.Errorf("ingest: no record for %v (--idle-exit), and partition %d cannot be read: %w", in.cfg.IdleExit, part, cause)
}

// waitForTopic returns once the topic exists, or the broker cannot say
// (then the group's join retries and reports). Joining a group for a topic
// that does not exist, on a cluster that does not create topics on
// demand, gave generations without partitions, hundreds a second, and no
// word of why; now the ingester says it is waiting, and with --idle-exit
// gives up with an error.
func (in *Ingester) waitForTopic(ctx context.Context) error {
	var logged time.Time
	for ctx.Err() == nil {
		if !in.topicGone(ctx) {
			return nil
		}
		where := fmt.Sprintf("topic %s does not exist on %s", in.cfg.Kafka.Topic, strings.Join(in.cfg.Kafka.Brokers, ","))
		idle := time.Since(time.Unix(0, in.lastIn.Load()))
		if in.cfg.IdleExit > 0 && idle > in.cfg.IdleExit {
			return fmt.Errorf("ingest: %s (waited %s; create it, e.g. emopipe produce --partitions N, or check --topic)", where, idle.Round(time.Second))
		}
		if time.Since(logged) >= time.Minute {
			in.logf("%s: waiting for it to be created", where)
			logged = time.Now()
		}
		sleepCtx(ctx, time.Second)
	}
	return nil
}

// topicGone reports whether the broker says the topic does not exist (not
// whether it cannot be asked).
func (in *Ingester) topicGone(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := in.cfg.Kafka.Partitions(ctx)
	return errors.Is(err, ingest.ErrNoTopic)
}

func (in *Ingester) progressLine() string {
	m := in.m
	return fmt.Sprintf("ingest %s: %.0f docs  %s  %.0f seqs  %.0f rejects  lag %.0f",
		in.cfg.Kafka.Topic, m.Sum("emopipe_ingest_documents_total"), HumanBytes(int64(m.Sum("emopipe_ingest_bytes_total"))),
		m.Sum("emopipe_ingest_sequences_total"), m.Sum("emopipe_ingest_rejects_total"), m.Sum("emopipe_ingest_lag_records"))
}

// every calls fn each period until ctx ends or fn returns false.
func every(ctx context.Context, period time.Duration, fn func() bool) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !fn() {
				return
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (in *Ingester) loadState(src string) (partitionState, bool, error) {
	raw, err := in.st.SourceState(src)
	if err != nil || raw == nil {
		return partitionState{}, false, err
	}
	var ps partitionState
	if err := json.Unmarshal(raw, &ps); err != nil {
		return ps, false, fmt.Errorf("ingest: state of %s: %w", src, err)
	}
	return ps, true, nil
}

// partition consumes one assigned partition until the generation ends or
// ctx is cancelled.
func (in *Ingester) partition(ctx, gctx context.Context, gen *ingest.Generation, a ingest.Assignment) error {
	// kafka-go does not wait for a worker started in a generation that has
	// just ended, so the next generation's worker of the same partition
	// could overlap it: it waits here until that one has returned.
	mu, _ := in.partitions.LoadOrStore(a.Partition, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	kc := &in.cfg.Kafka
	src := kc.SourceName(a.Partition)
	state, known, err := in.loadState(src)
	if err != nil {
		return err
	}
	packer, err := packing.New(in.pc)
	if err != nil {
		return err
	}
	if err := packer.UnmarshalState(state.Tail); err != nil {
		return fmt.Errorf("ingest: %s: %w", src, err)
	}
	// Resume from the store's position, unless the group went further
	// (another member owned the partition since): its commit is the proof
	// that those records are in that member's store.
	start := state.Next
	if a.Committed > start {
		// Said, because from this store alone it looks like loss: a store
		// that was wiped or replaced, with the same group, starts where the
		// group is.
		has := "none of it"
		if known {
			has = fmt.Sprintf("it up to offset %d", state.Next)
		}
		in.logf("partition %d: starting at offset %d, where group %q has committed; this store has %s. The records before are in the store of the member that committed them (for all of them in one store, ingest into a new store with a new group)",
			a.Partition, a.Committed, in.cfg.Kafka.Group, has)
		start = a.Committed
	}
	atEnd := !known && a.Committed < 0 && kc.Start == ingest.StartLatest
	if atEnd {
		_, end, err := kc.Offsets(ctx, a.Partition)
		if err != nil {
			return err
		}
		in.logf("partition %d: starting at its end, offset %d (--start %s): neither this store nor group %q has read it, and the offsets before are left unread",
			a.Partition, end, ingest.StartLatest, kc.Group)
		start = end
	}
	// Read from the last record read, to check it is still there.
	var verify *recordMark
	readFrom := start
	if last := state.Last; last != nil && start == state.Next && last.Offset < start {
		verify, readFrom = last, last.Offset
	}
	ra := shareReadAhead(len(gen.Partitions), in.cfg.FetchMaxBytes)
	reader, err := kc.NewPartitionReader(a.Partition, readFrom, ra.fetchBytes)
	if err != nil {
		return err
	}
	defer reader.Close()
	defer in.unread.Delete(a.Partition)

	both, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-gctx.Done():
			stop()
		case <-both.Done():
		}
	}()

	w := &partitionWork{in: in, gen: gen, partition: a.Partition, src: src, packer: packer,
		ps: newPackStage(in.st, packer, in.pending), next: start, sent: start, committed: start, ownStart: start, lastCommit: time.Now()}
	if start == state.Next {
		w.last, w.committedLast = state.Last, state.Last
	}
	if atEnd {
		// Committed at the first fetch that finds nothing new: a restart
		// before any record arrives starts here, not at the end again,
		// past the records written in between.
		w.sent = -1
	}
	// The commit in flight must end before the generation does.
	defer w.wait()
	// lost handles a batch the group moved on without: its records, and
	// those read after it, belong to the partition's next owner.
	lost := func() error {
		in.logf("partition %d: offset commit refused (generation %d over); batch discarded", a.Partition, gen.ID)
		w.ps.reset()
		return w.reloadAndFlush(gctx.Err() != nil && ctx.Err() == nil)
	}
	for {
		if in.cfg.Throttle != nil {
			// The throttle counts committed sequences: settle the commit in
			// flight first, so that an ingester held back by it overshoots
			// by one uncommitted batch and one fetch per partition, as
			// without overlapped commits.
			if landed, err := w.settle(); err != nil || !landed {
				if err != nil {
					return err
				}
				return lost()
			}
			t0 := time.Now()
			in.busy.Add(1) // a throttled ingester is held back, not idle
			err := in.cfg.Throttle(both)
			in.busy.Add(-1)
			if time.Since(t0) > 10*time.Millisecond {
				in.lastIn.Store(time.Now().UnixNano())
			}
			if err != nil && both.Err() == nil {
				return err
			}
		}
		recs, ferr := reader.Fetch(both, in.cfg.FetchMax, ra.fetchBytes, 200*time.Millisecond)
		// A commit that ended refused ends the partition's work at once,
		// also when no record follows it (a fetch waits 200 ms at most).
		if landed, err := w.poll(); err != nil || !landed {
			if err != nil {
				return err
			}
			return lost()
		}
		if err := reader.Failing(); err != nil {
			in.unread.Store(a.Partition, err)
		} else {
			in.unread.Delete(a.Partition)
		}
		if te := (*ingest.TruncatedError)(nil); errors.As(ferr, &te) {
			read := *te // the reader may stand on the last record read, to check it
			read.Pos = max(read.Pos, w.next)
			return fmt.Errorf("ingest: partition %d: %w. %s", a.Partition, &read, oldLog)
		}
		if verify != nil && len(recs) > 0 {
			// A record before it (compaction, retention) cannot be told.
			if recs[0].Offset == verify.Offset && markOf(&recs[0]).Sum != verify.Sum {
				return fmt.Errorf("ingest: partition %d: the record at offset %d is not the one this store read there: the topic was deleted and created again. %s", a.Partition, verify.Offset, oldLog)
			}
			verify = nil
		}
		for len(recs) > 0 && recs[0].Offset < start { // read again to check
			recs = recs[1:]
		}
		in.busy.Add(1)
		if ferr != nil && both.Err() == nil {
			in.logf("partition %d: %v (retrying)", a.Partition, ferr)
			sleepCtx(both, time.Second)
		}
		stopping := both.Err() != nil
		// A short fetch means the partition is (nearly) caught up: commit
		// now rather than at the interval, so a quiet stream's records are
		// final within one fetch.
		caughtUp := len(recs) < in.cfg.FetchMax && ingest.ValueBytes(recs) < ra.fetchBytes
		// A fetch is handled in parts, so that a due commit starts early
		// and runs while the rest is tokenized, and the last is small.
		for i, last := 0, false; !last; {
			j := partEnd(recs, i, ra.partBytes) // an empty fetch is one empty part
			if err := w.handle(recs[i:j]); err != nil {
				in.busy.Add(-1)
				return err
			}
			i, last = j, j >= len(recs)
			if last {
				// Past the markers, aborted and compacted offsets after
				// this fetch's records: committed with them.
				w.readPast(reader.ReadThrough())
			}
			if w.due() || last && (stopping || caughtUp && w.next != w.sent) {
				// The commit runs while the next records are tokenized; the
				// one before it is settled first.
				landed, err := w.commit()
				if err != nil {
					in.busy.Add(-1)
					return err
				}
				if !landed {
					in.busy.Add(-1)
					return lost()
				}
			}
		}
		in.m.Set("emopipe_ingest_lag_records", float64(reader.Lag()), "partition", strconv.Itoa(a.Partition))
		w.heldBack(reader.HeldBack(), reader.Lag())
		if len(recs) > 0 {
			in.lastIn.Store(time.Now().UnixNano()) // handling took time; idleness starts now
		}
		in.busy.Add(-1)
		if stopping {
			if landed, err := w.settle(); err != nil || !landed {
				if err != nil {
					return err
				}
				return lost()
			}
			break
		}
	}
	// Revoked (not shutting down): flush the tail so that no document of
	// this member's waits on a partition it may never own again.
	if gctx.Err() != nil && ctx.Err() == nil {
		return w.flushTail()
	}
	return nil
}

// partitionWork is one partition's unfinished batch.
type partitionWork struct {
	in        *Ingester
	gen       *ingest.Generation
	partition int
	src       string
	packer    *packing.Packer
	ps        *packStage
	dead      []ingest.DeadLetter
	next      int64 // offset after the last record handled
	sent      int64 // offset the last commit started reaches
	committed int64 // offset the last final commit reached
	// last is the last record handled, committedLast the last one the
	// last final commit reached (partitionState.Last).
	last, committedLast *recordMark
	ownStart            int64 // where this ownership began (commit metadata)
	lastCommit          time.Time
	// heldSince is when the partition was first found read up to its
	// last stable offset with records after it (zero: not so), and
	// heldSaid whether that was logged.
	heldSince time.Time
	heldSaid  bool
	// flight is the outcome of the commit in flight (nil if none), and
	// flightEnd the offset it reaches.
	flight     chan commitResult
	flightEnd  int64
	flightLast *recordMark
}

type commitResult struct {
	landed bool
	err    error
}

func (w *partitionWork) handle(recs []ingest.Record) error {
	if len(recs) == 0 {
		return nil
	}
	in := w.in
	in.lastIn.Store(time.Now().UnixNano())
	if in.m.Get("emopipe_ingest_first_record_unixtime") == 0 {
		in.m.Set("emopipe_ingest_first_record_unixtime", float64(time.Now().UnixNano())/1e9)
	}
	pl := strconv.Itoa(w.partition)
	if recs[0].Offset > w.next {
		w.checkDeleted(recs[0].Offset)
	}
	in.m.Add("emopipe_ingest_records_total", float64(len(recs)), "partition", pl)
	docs := make([]ingest.Document, 0, len(recs))
	origin := make([]ingest.Record, 0, len(recs)) // the record of each doc, for dead letters
	for _, r := range recs {
		doc, rej := in.cfg.Kafka.Parse(r)
		if rej != nil {
			w.reject(rej, r)
			continue
		}
		docs = append(docs, doc)
		origin = append(origin, r)
	}
	verdicts, err := w.ps.checkAll(docs)
	if err != nil {
		return err
	}
	texts := make([]string, 0, len(docs))
	for i := range docs {
		if verdicts[i].reason == "" {
			// No copy: a parsed document's text is never written again.
			texts = append(texts, unsafe.String(unsafe.SliceData(docs[i].Text), len(docs[i].Text)))
		}
	}
	ids := in.tokens.encode(texts)
	before := len(w.ps.batch.Sequences)
	var accepted, bytes, tokens int
	for i := range docs {
		d := &docs[i]
		if v := verdicts[i]; v.reason != "" {
			w.reject(&ingest.Reject{Source: d.Source, Position: d.Position, DocKey: d.ID, Reason: v.reason, Detail: v.detail, Bytes: len(d.Text)}, origin[i])
			continue
		}
		w.ps.accept(d, ids[accepted])
		bytes += len(d.Text)
		tokens += len(ids[accepted])
		accepted++
	}
	in.m.Add("emopipe_ingest_documents_total", float64(accepted))
	in.m.Add("emopipe_ingest_bytes_total", float64(bytes))
	in.m.Add("emopipe_ingest_tokens_total", float64(tokens))
	in.m.Add("emopipe_ingest_sequences_total", float64(len(w.ps.batch.Sequences)-before))
	w.next = recs[len(recs)-1].Offset + 1
	w.last = markOf(&recs[len(recs)-1])
	return nil
}

// heldAfter is how long a partition waits behind an open transaction
// before the ingester says so: Kafka Streams commits every 100 ms, Flink at
// each checkpoint, and a producer that died holds its transaction until
// the broker aborts it (transaction.timeout.ms, one minute by default).
const heldAfter = 30 * time.Second

// heldBack records the offsets the reader may not read yet (read_committed
// behind an open transaction) and says once per wait when the ingester has
// read everything else and waited heldAfter: without it, a stalled
// partition looked caught up (its lag counts to the last stable offset).
func (w *partitionWork) heldBack(held, lag int64) {
	in := w.in
	in.m.Set("emopipe_ingest_held_back_records", float64(held), "partition", strconv.Itoa(w.partition))
	if held == 0 || lag > 0 {
		w.heldSince, w.heldSaid = time.Time{}, false
		return
	}
	if w.heldSince.IsZero() {
		w.heldSince = time.Now()
	}
	if !w.heldSaid && time.Since(w.heldSince) >= heldAfter {
		w.heldSaid = true
		in.logf("partition %d: %d offsets wait behind a transaction still open after %v (read_committed reads them once it ends; --isolation read_uncommitted reads them now)",
			w.partition, held, heldAfter)
	}
}

// oldLog ends the errors of a partition whose log is no longer the one
// the store read.
const oldLog = "The offsets read before are the old log's, and a partition is not read backwards: ingest the topic into a new store with a new group"

// readPast moves the partition's position to through, the reader's
// position past offsets that hold no record for it (transaction markers,
// aborted transactions, offsets compaction emptied), so that its store and
// group offsets reach the partition's end: a partition ending with a
// transaction's commit marker showed a lag of 1 in Kafka's tools for as
// long as no record followed. Retention is checked for as when records
// resume past the expected offset.
func (w *partitionWork) readPast(through int64) {
	if through <= w.next {
		return
	}
	w.checkDeleted(through)
	w.next = through
}

// checkDeleted runs when the partition's records resume past the offset
// expected next. Transaction markers, aborted transactions and compaction
// leave such gaps too; retention is told apart by the log start offset
// having passed the expected one. The partition reader then skips to the
// log start without a word, so the offsets that retention took are
// recorded here, in the store's rejects (in this batch's transaction, so
// once), with a metric and a log line: records lost before emopipe could
// read them, never silently.
func (w *partitionWork) checkDeleted(seen int64) {
	in := w.in
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	first, _, err := in.cfg.Kafka.Offsets(ctx, w.partition)
	if err != nil {
		in.logf("partition %d: records resume at offset %d, not %d, and the log start is unknown: %v", w.partition, seen, w.next, err)
		return
	}
	if first <= w.next {
		return // markers or compaction, not data loss
	}
	end := min(first, seen)
	n := end - w.next
	in.m.Add("emopipe_ingest_records_deleted_total", float64(n), "partition", strconv.Itoa(w.partition))
	in.m.Add("emopipe_ingest_rejects_total", 1, "reason", ingest.ReasonOffsetsDeleted)
	in.logf("partition %d: offsets %d-%d (%d records) were deleted by the topic's retention before they were read; recorded in the store's rejects", w.partition, w.next, end-1, n)
	// Into the store even with a dead-letter topic: there is no record to send.
	w.ps.reject(&ingest.Reject{Source: w.src, Position: fmt.Sprintf("offsets %d-%d", w.next, end-1), Reason: ingest.ReasonOffsetsDeleted,
		Detail: fmt.Sprintf("%d records deleted by the topic's retention before they were read (log start offset %d)", n, first)})
}

func (w *partitionWork) reject(r *ingest.Reject, rec ingest.Record) {
	w.in.m.Add("emopipe_ingest_rejects_total", 1, "reason", r.Reason)
	if w.in.dlq != nil {
		dead := *r
		dead.DocKey = shortKey(r.DocKey)
		w.dead = append(w.dead, ingest.DeadLetter{Reject: dead, Key: rec.Key, Value: rec.Value})
		return
	}
	w.ps.reject(r)
}

// handleRecords is the most records handled between two looks at whether
// a commit is due.
//
// Small parts keep the end of a run short: after the last records are
// tokenized, what is left is packing one part and committing it. With 256
// (and commits every 512 sequences) the last partition's final commit held
// its whole backlog, and the run ended 30 ms after its last tokenizing
// step, one core idle; with 64 and 128, about 10 ms.
const handleRecords = 64

// handleBytes bounds a part by its records' bytes too: the text, ids and
// sequences of 64 records of 900 KB are a few hundred MB.
const handleBytes = 2 << 20

// A partition's records wait in memory in three places: the fetch
// response its reader holds ahead (one, of at most the partition's fetch
// bytes), the records a fetch returned (IngestConfig.FetchMaxBytes) and
// the part being handled (handleBytes). Those bounds are per partition,
// and every partition a member owns fills them at once while they wait
// for the shared tokenizer: with 32 partitions of 780 KB records the
// ingester held 450 MB of record values and its RSS reached 2.0 GB. A
// member owning more than a few partitions divides these totals among
// them instead, down to the floors.
const (
	readAheadFetchBytes = 32 << 20 // fetches
	readAheadPartBytes  = 8 << 20  // parts being handled
	minFetchBytes       = 1 << 20
	minPartBytes        = 256 << 10
)

// readAhead is one partition's share of those bounds.
type readAhead struct{ fetchBytes, partBytes int }

// shareReadAhead is the share of each of owned partitions. Up to 4
// partitions each gets the per-partition bounds (fetchMaxBytes among
// them) as they are.
func shareReadAhead(owned, fetchMaxBytes int) readAhead {
	n := max(owned, 1)
	return readAhead{
		fetchBytes: clamp(readAheadFetchBytes/n, min(minFetchBytes, fetchMaxBytes), fetchMaxBytes),
		partBytes:  clamp(readAheadPartBytes/n, minPartBytes, handleBytes),
	}
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// partEnd is the end of the part of recs that starts at i: handleRecords
// records, or fewer whose values reach maxBytes (at least one).
func partEnd(recs []ingest.Record, i, maxBytes int) int {
	j, size := i, 0
	for j < len(recs) && j-i < handleRecords && (j == i || size < maxBytes) {
		size += len(recs[j].Value)
		j++
	}
	return j
}

func (w *partitionWork) due() bool {
	if w.next == w.sent {
		return false
	}
	return w.ps.full(w.in.cfg.CommitSequences) || len(w.dead) >= maxBatchRecords || time.Since(w.lastCommit) >= w.in.cfg.CommitInterval
}

// commit starts the protocol of packing/store/stage.go for the pending
// batch, after settling the commit before it. It reports false if that
// one did not become final (the generation is over): then nothing new
// starts.
func (w *partitionWork) commit() (bool, error) {
	if w.next == w.sent {
		return true, nil
	}
	if landed, err := w.settle(); err != nil || !landed {
		return landed, err
	}
	tail, err := w.packer.MarshalState()
	if err != nil {
		return false, err
	}
	state, _ := json.Marshal(partitionState{Next: w.next, Tail: tail, Last: w.last})
	batch, keys := w.ps.detach()
	batch.Sources = map[string][]byte{w.src: state}
	dead := w.dead
	w.dead = nil
	end := w.next
	in := w.in
	in.busy.Add(1) // a commit in flight is work, not idleness
	done := make(chan commitResult, 1)
	w.flight, w.flightEnd, w.flightLast, w.sent, w.lastCommit = done, end, w.last, end, time.Now()
	go func() {
		defer in.busy.Add(-1)
		landed, err := w.run(&batch, dead, end)
		// Reserved ids are released once they are in the store, or when
		// the batch is discarded (its next owner reads them again).
		in.pending.release(keys)
		done <- commitResult{landed, err}
	}()
	return true, nil
}

// settle waits for the commit in flight, if any, and reports whether it
// became final.
func (w *partitionWork) settle() (bool, error) {
	if w.flight == nil {
		return true, nil
	}
	return w.result(<-w.flight)
}

// poll is settle if the commit in flight has ended, and reports true
// otherwise.
func (w *partitionWork) poll() (bool, error) {
	select {
	case r := <-w.flight: // a nil channel is never ready
		return w.result(r)
	default:
		return true, nil
	}
}

func (w *partitionWork) result(r commitResult) (bool, error) {
	w.flight = nil
	if r.err == nil && r.landed {
		w.committed, w.committedLast = w.flightEnd, w.flightLast
	}
	return r.landed, r.err
}

// wait lets the commit in flight end, whatever its outcome.
func (w *partitionWork) wait() {
	if w.flight != nil {
		<-w.flight
		w.flight = nil
	}
}

// run makes one batch, which reaches offset end, final: dead letters,
// stage, Kafka offset commit, finalize (or discard). It runs beside the
// partition's next fetch, so it touches nothing of w that changes.
func (w *partitionWork) run(batch *store.Batch, dead []ingest.DeadLetter, end int64) (bool, error) {
	in := w.in
	t0 := time.Now()
	// A bounded context of its own: commits also run during shutdown,
	// for StopGrace at most after a stop from outside.
	parent := in.commits // set by Run before any partition works
	ctx, cancel := context.WithTimeout(parent, 2*time.Minute)
	defer cancel()
	if in.dlq != nil {
		// Before the commit: dead letters are at-least-once, never lost.
		if err := in.dlq.Send(ctx, dead); err != nil {
			if parent.Err() != nil {
				in.logf("partition %d: stopped before its batch up to offset %d was committed: the dead-letter topic did not answer within %v of the stop; the next start reads those records again", w.partition, end, in.cfg.StopGrace)
			}
			return false, err
		}
	}
	token := fmt.Sprintf("%s/%d/%d", w.gen.MemberID, w.gen.ID, end)
	// Encoded once: the staged value holds the final values.
	sb, err := in.st.Stage(batch, w.src, end, token)
	if err != nil {
		return false, err
	}
	// The staged copy holds the tokens now: their buffers go back to the
	// packer for the sequences it fills next.
	w.packer.Recycle(batch.Sequences)
	meta := commitMetadata(w.ownStart, token)
	landed := w.gen.Commit(ctx, w.partition, end, meta) == nil
	if !landed {
		if landed, err = in.landed(ctx, w.partition, end, token); err != nil {
			if parent.Err() != nil {
				in.logf("partition %d: stopped with its batch up to offset %d staged: Kafka did not answer within %v of the stop; the next start settles it", w.partition, end, in.cfg.StopGrace)
			}
			return false, err // stays staged; resolved at the next start
		}
	}
	if landed {
		_, err = in.st.Finalize(sb)
		in.m.Add("emopipe_ingest_commits_total", 1, "outcome", "final")
		// End-to-end lag: from the record's Kafka timestamp to its commit.
		now := time.Now().UnixMilli()
		for _, d := range batch.Docs {
			if d.Time > 0 {
				lag := float64(now-d.Time) / 1000
				in.m.Add("emopipe_ingest_e2e_lag_seconds_sum", lag)
				in.m.Add("emopipe_ingest_e2e_lag_seconds_count", 1)
				if lag > in.m.Get("emopipe_ingest_e2e_lag_seconds_max") {
					in.m.Set("emopipe_ingest_e2e_lag_seconds_max", lag)
				}
			}
		}
		in.m.Set("emopipe_ingest_last_commit_unixtime", float64(time.Now().UnixNano())/1e9)
	} else {
		err = in.st.Discard(w.src)
		in.m.Add("emopipe_ingest_commits_total", 1, "outcome", "discarded")
	}
	if err != nil {
		return false, err
	}
	in.lastIn.Store(time.Now().UnixNano()) // a slow commit is not idleness
	in.m.Add("emopipe_ingest_commit_seconds_total", time.Since(t0).Seconds())
	return landed, nil
}

// reloadAndFlush restores the packer from the store after a discarded
// batch and, if the partition was revoked, flushes its tail.
func (w *partitionWork) reloadAndFlush(revoked bool) error {
	st, _, err := w.in.loadState(w.src)
	if err != nil {
		return err
	}
	if err := w.packer.UnmarshalState(st.Tail); err != nil {
		return err
	}
	w.committed, w.committedLast = st.Next, st.Last
	if !revoked {
		return nil
	}
	return w.flushTail()
}

func (w *partitionWork) flushTail() error {
	seqs := w.packer.Flush()
	if len(seqs) == 0 {
		return nil
	}
	state, _ := json.Marshal(partitionState{Next: w.committed, Last: w.committedLast})
	_, err := w.in.st.Commit(&store.Batch{Sequences: seqs, Sources: map[string][]byte{w.src: state}})
	w.in.m.Add("emopipe_ingest_sequences_total", float64(len(seqs)))
	return err
}

// commitMetadata travels with the Kafka offset commit: the offset this
// member's ownership began at, and the commit's token.
func commitMetadata(start int64, token string) string {
	return fmt.Sprintf("emopipe start=%d token=%s", start, token)
}

func parseStart(meta string) (int64, bool) {
	for _, f := range strings.Fields(meta) {
		if v, ok := strings.CutPrefix(f, "start="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// landed decides whether the batch ending at end with this token was
// committed to the group. The offset alone cannot say: if another member
// committed past end, the batch counts as landed only if that member's
// ownership began at or after end (it did not read these records again).
func (in *Ingester) landed(ctx context.Context, partition int, end int64, token string) (bool, error) {
	backoff := 200 * time.Millisecond
	for {
		committed, meta, err := in.group.CommittedOffset(ctx, partition)
		if err == nil {
			switch {
			case committed < end:
				return false, nil
			case strings.Contains(meta, "token="+token):
				return true, nil
			default:
				start, ok := parseStart(meta)
				return ok && start >= end, nil
			}
		}
		in.logf("partition %d: resolving commit: %v (retrying in %v)", partition, err, backoff)
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("ingest: partition %d: cannot learn whether offset %d was committed: %w", partition, end, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// resolveStaged finishes or discards batches a crash left staged.
func (in *Ingester) resolveStaged(ctx context.Context) error {
	staged, err := in.st.Staged()
	if err != nil {
		return err
	}
	prefix := "kafka:" + in.cfg.Kafka.Topic + "/"
	for src, sb := range staged {
		p, err := strconv.Atoi(strings.TrimPrefix(src, prefix))
		if !strings.HasPrefix(src, prefix) || err != nil {
			continue // another topic's; resolved by its own ingester
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		landed, err := in.landed(rctx, p, sb.End, sb.Token)
		cancel()
		if err != nil {
			return err
		}
		if landed {
			_, err = in.st.Finalize(sb)
		} else {
			err = in.st.Discard(src)
		}
		if err != nil {
			return err
		}
		in.logf("partition %d: staged batch to offset %d %s after restart", p, sb.End, map[bool]string{true: "finalized", false: "discarded"}[landed])
	}
	return nil
}

// flushOrphanTails pads and commits the unfinished tails of partitions
// this member no longer owns.
func (in *Ingester) flushOrphanTails(owned map[int]bool) error {
	srcs, err := in.st.Sources()
	if err != nil {
		return err
	}
	prefix := "kafka:" + in.cfg.Kafka.Topic + "/"
	for src, raw := range srcs {
		p, err := strconv.Atoi(strings.TrimPrefix(src, prefix))
		if !strings.HasPrefix(src, prefix) || err != nil || owned[p] {
			continue
		}
		var ps partitionState
		if json.Unmarshal(raw, &ps) != nil || len(ps.Tail) == 0 {
			continue
		}
		packer, err := packing.New(in.pc)
		if err != nil {
			return err
		}
		if err := packer.UnmarshalState(ps.Tail); err != nil {
			return err
		}
		w := &partitionWork{in: in, src: src, packer: packer, committed: ps.Next, committedLast: ps.Last}
		if err := w.flushTail(); err != nil {
			return err
		}
	}
	return nil
}

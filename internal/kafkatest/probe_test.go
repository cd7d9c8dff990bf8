package kafkatest

// Probe of github.com/segmentio/kafka-go against a real Apache Kafka broker
// (TestProbeKafka: EMOPIPE_KAFKA=1 or EMOPIPE_KAFKA_BROKERS) and against kfake
// (TestProbeFake: also EMOPIPE_KAFKA_PROBE=1). Each finding is t.Log'ed with a
// "PROBE" prefix and, with EMOPIPE_KAFKA_PROBE_OUT=file, appended to that file.
//
//	EMOPIPE_KAFKA=1 go test ./internal/kafkatest -run Probe -v -timeout 20m

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

const (
	probeN     = 10000
	probeParts = 4
	valueSize  = 256
)

type probe struct {
	name    string
	brokers []string
	inst    *Instance // nil: cannot restart (kfake, external)
	mu      sync.Mutex
	out     *os.File
}

func newProbe(t *testing.T, name string, brokers []string, inst *Instance) *probe {
	p := &probe{name: name, brokers: brokers, inst: inst}
	if f := os.Getenv("EMOPIPE_KAFKA_PROBE_OUT"); f != "" {
		out, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		p.out = out
		t.Cleanup(func() { out.Close() })
	}
	return p
}

func (p *probe) rec(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Logf("PROBE %s", line)
	if p.out != nil {
		p.mu.Lock()
		fmt.Fprintf(p.out, "[%s] %s: %s\n", p.name, t.Name(), line)
		p.mu.Unlock()
	}
}

func TestProbeKafka(t *testing.T) {
	brokers := Broker(t)
	v := os.Getenv("KAFKA_VERSION")
	if v == "" {
		v = "4.4.0"
	}
	if os.Getenv(EnvBrokers) != "" {
		v = "external"
	}
	newProbe(t, "kafka-"+v, brokers, Lookup(brokers)).run(t)
}

func TestProbeFake(t *testing.T) {
	if !Available() && os.Getenv("EMOPIPE_KAFKA_PROBE") != "1" {
		t.Skip("set EMOPIPE_KAFKA_PROBE=1 (or EMOPIPE_KAFKA=1) to run the kafka-go probe against kfake")
	}
	newProbe(t, "kfake", Fake(t, probeParts), nil).run(t)
}

var codecs = []struct {
	name  string
	codec kafka.Compression
}{
	{"none", 0}, {"gzip", kafka.Gzip}, {"snappy", kafka.Snappy}, {"lz4", kafka.Lz4}, {"zstd", kafka.Zstd},
}

func (p *probe) run(t *testing.T) {
	t.Run("ApiVersions", p.apiVersions)
	t.Run("CreateTopics", p.createTopics)
	t.Run("Produce", p.produceAll)
	t.Run("ReaderGroup", p.readerGroup)
	t.Run("ReaderGroupTwoReaders", p.readerGroupTwo)
	t.Run("ConsumerGroupGenerations", p.generations)
	t.Run("OffsetsAndLag", p.offsetsAndLag)
	t.Run("ExplicitFetch", p.explicitFetch)
	t.Run("CrashedMember", p.crashedMember)
	t.Run("BrokerRestart", p.brokerRestart)
	t.Run("DeleteTopics", p.deleteTopics)
}

// ---------------------------------------------------------------- messages

func value(seq int) []byte {
	b := make([]byte, valueSize)
	copy(b, fmt.Sprintf("seq=%09d ", seq))
	const text = "the quick brown fox jumps over the lazy dog; emopipe ingests documents. "
	for i := 14; i < len(b); i++ {
		b[i] = text[(i+seq)%len(text)]
	}
	return b
}

func seqOf(v []byte) int {
	if len(v) < 13 || string(v[:4]) != "seq=" {
		return -1
	}
	n, err := strconv.Atoi(string(v[4:13]))
	if err != nil {
		return -1
	}
	return n
}

func messages(from, n int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		seq := from + i
		msgs[i] = kafka.Message{Key: []byte("doc-" + strconv.Itoa(seq)), Value: value(seq)}
	}
	return msgs
}

func newWriter(brokers []string, topic string, codec kafka.Compression) *kafka.Writer {
	return &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 1000, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond,
		RequiredAcks: kafka.RequireAll, Compression: codec,
	}
}

// seqSet counts unique and duplicate sequence numbers.
type seqSet struct {
	mu   sync.Mutex
	seen map[int]int
	dups int
}

func newSeqSet() *seqSet { return &seqSet{seen: map[int]int{}} }

func (s *seqSet) add(seq int) {
	s.mu.Lock()
	s.seen[seq]++
	if s.seen[seq] > 1 {
		s.dups++
	}
	s.mu.Unlock()
}

func (s *seqSet) maxSeq() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := -1
	for k := range s.seen {
		m = max(m, k)
	}
	return m
}

func (s *seqSet) len() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.seen) }

func (s *seqSet) missing(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := 0
	for i := range n {
		if s.seen[i] == 0 {
			m++
		}
	}
	return m
}

func rate(n int, d time.Duration) string {
	return fmt.Sprintf("%d msgs in %v = %.0f msg/s, %.1f MB/s", n, d.Round(time.Millisecond),
		float64(n)/d.Seconds(), float64(n*valueSize)/d.Seconds()/1e6)
}

func short(err error) string {
	if err == nil {
		return "ok"
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// ---------------------------------------------------------------- ApiVersions

// Versions kafka-go's Conn (legacy API used by Reader, ConsumerGroup, Conn.*)
// hard-codes or negotiates, from conn.go / createtopics.go / deletetopics.go.
var connUses = []struct {
	api      string
	key      int16
	versions []int16
	where    string
}{
	{"Produce", 0, []int16{2, 3, 7}, "Conn.WriteMessages (negotiated)"},
	{"Fetch", 1, []int16{2, 5, 10}, "Conn.ReadBatch, Reader (negotiated)"},
	{"ListOffsets", 2, []int16{1}, "Conn.ReadOffset*/Reader start offsets, Reader.ReadLag (fixed)"},
	{"Metadata", 3, []int16{1}, "Conn.Brokers/Controller (fixed)"},
	{"Metadata", 3, []int16{1, 6}, "Conn.ReadPartitions (negotiated)"},
	{"OffsetCommit", 8, []int16{2}, "Reader.CommitMessages, Generation.CommitOffsets (fixed)"},
	{"OffsetFetch", 9, []int16{1}, "ConsumerGroup initial offsets (fixed)"},
	{"FindCoordinator", 10, []int16{0}, "ConsumerGroup (fixed)"},
	{"JoinGroup", 11, []int16{1, 2}, "ConsumerGroup (negotiated)"},
	{"Heartbeat", 12, []int16{0}, "ConsumerGroup (fixed)"},
	{"LeaveGroup", 13, []int16{0}, "ConsumerGroup.Close (fixed)"},
	{"SyncGroup", 14, []int16{0}, "ConsumerGroup (fixed)"},
	{"ListGroups", 16, []int16{1}, "Conn listGroups (fixed)"},
	{"CreateTopics", 19, []int16{0, 1, 2}, "Conn.CreateTopics (negotiated)"},
	{"DeleteTopics", 20, []int16{0, 1}, "Conn.DeleteTopics (negotiated)"},
}

// APIs the protocol package (kafka.Client, kafka.Transport used by Writer) implements.
var protocolAPIs = []string{"AddOffsetsToTxn", "AddPartitionsToTxn", "AlterClientQuotas", "AlterConfigs",
	"AlterPartitionReassignments", "AlterUserScramCredentials", "ApiVersions", "CreateAcls",
	"CreatePartitions", "CreateTopics", "DeleteAcls", "DeleteGroups", "DeleteTopics", "DescribeAcls",
	"DescribeClientQuotas", "DescribeConfigs", "DescribeGroups", "DescribeUserScramCredentials",
	"ElectLeaders", "EndTxn", "Fetch", "FindCoordinator", "Heartbeat", "IncrementalAlterConfigs",
	"InitProducerId", "JoinGroup", "LeaveGroup", "ListGroups", "ListOffsets", "ListPartitionReassignments",
	"Metadata", "OffsetCommit", "OffsetDelete", "OffsetFetch", "Produce", "SaslAuthenticate",
	"SaslHandshake", "SyncGroup", "TxnOffsetCommit"}

func (p *probe) apiVersions(t *testing.T) {
	conn, err := kafka.Dial("tcp", p.brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	vs, err := conn.ApiVersions()
	if err != nil {
		t.Fatal(err)
	}
	broker := map[int16]kafka.ApiVersion{}
	for _, v := range vs {
		broker[v.ApiKey] = v
	}
	for _, u := range connUses {
		b, ok := broker[u.key]
		if !ok {
			p.rec(t, "Conn %s %v [%s]: broker does not offer the API -> FAIL", u.api, u.versions, u.where)
			continue
		}
		var usable []int16
		for _, v := range u.versions {
			if v >= b.MinVersion && v <= b.MaxVersion {
				usable = append(usable, v)
			}
		}
		verdict := "FAIL (unsupported version)"
		if len(usable) > 0 {
			verdict = fmt.Sprintf("ok, uses v%d", slices.Max(usable))
		}
		p.rec(t, "Conn %-15s kafka-go v%v broker v%d-v%d [%s] -> %s", u.api, u.versions, b.MinVersion, b.MaxVersion, u.where, verdict)
	}
	var bad, good []string
	for _, name := range protocolAPIs {
		var key protocol.ApiKey = -1
		for k := range protocol.ApiKey(100) {
			if k.String() == name {
				key = k
				break
			}
		}
		if key < 0 {
			continue
		}
		b, ok := broker[int16(key)]
		if !ok {
			continue // e.g. SASL APIs on a plaintext listener, or removed APIs
		}
		lo, hi := key.MinVersion(), key.MaxVersion()
		if hi < b.MinVersion || lo > b.MaxVersion {
			bad = append(bad, fmt.Sprintf("%s kafka-go v%d-%d broker v%d-%d", name, lo, hi, b.MinVersion, b.MaxVersion))
		} else {
			good = append(good, fmt.Sprintf("%s→v%d", name, min(hi, b.MaxVersion)))
		}
	}
	p.rec(t, "protocol pkg (Client/Writer) APIs with NO overlapping version: %v", bad)
	p.rec(t, "protocol pkg negotiated versions: %s", strings.Join(good, " "))
	// Broker minimum versions (what KIP-896 removed shows up as min > 0).
	var mins []string
	for _, v := range vs {
		if v.MinVersion > 0 {
			mins = append(mins, fmt.Sprintf("%s>=v%d", protocol.ApiKey(v.ApiKey), v.MinVersion))
		}
	}
	p.rec(t, "broker APIs with min version > 0: %s", strings.Join(mins, " "))
}

// ---------------------------------------------------------------- topics

func (p *probe) createTopics(t *testing.T) {
	t0 := time.Now()
	for _, c := range codecs {
		CreateTopic(t, p.brokers, "probe-"+c.name, probeParts)
	}
	p.rec(t, "Client.CreateTopics x%d (4 partitions, until all partitions led): ok in %v", len(codecs), time.Since(t0).Round(time.Millisecond))

	conn, err := kafka.Dial("tcp", p.brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.CreateTopics(kafka.TopicConfig{Topic: "probe-conncreate", NumPartitions: 2, ReplicationFactor: 1})
	p.rec(t, "Conn.CreateTopics: %s", short(err))

	// Auto-creation through the Writer (Metadata with AllowAutoTopicCreation).
	w := newWriter(p.brokers, "probe-auto", 0)
	w.AllowAutoTopicCreation = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 = time.Now()
	err = w.WriteMessages(ctx, messages(0, 10)...)
	p.rec(t, "Writer.AllowAutoTopicCreation first write to new topic: %s in %v", short(err), time.Since(t0).Round(time.Millisecond))
	for i := 1; err != nil && i <= 50; i++ {
		time.Sleep(100 * time.Millisecond)
		err = w.WriteMessages(ctx, messages(0, 10)...)
		if err == nil {
			p.rec(t, "Writer.AllowAutoTopicCreation: retry #%d succeeded %v after the first call", i, time.Since(t0).Round(time.Millisecond))
		}
	}
	w.Close()

	_, err = (&kafka.Client{Addr: kafka.TCP(p.brokers...)}).CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: "probe-none", NumPartitions: 4, ReplicationFactor: 1}}})
	resp, _ := (&kafka.Client{Addr: kafka.TCP(p.brokers...)}).CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: "probe-none", NumPartitions: 4, ReplicationFactor: 1}}})
	if resp != nil {
		p.rec(t, "Client.CreateTopics on existing topic: per-topic error %v (errors.Is TopicAlreadyExists=%v)",
			resp.Errors["probe-none"], errors.Is(resp.Errors["probe-none"], kafka.TopicAlreadyExists))
	}
}

// ---------------------------------------------------------------- produce

func (p *probe) produceAll(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			w := newWriter(p.brokers, "probe-"+c.name, c.codec)
			defer w.Close()
			t0 := time.Now()
			for from := 0; from < probeN; from += 1000 {
				if err := w.WriteMessages(ctx, messages(from, 1000)...); err != nil {
					t.Fatalf("WriteMessages: %v", err)
				}
			}
			d := time.Since(t0)
			st := w.Stats()
			p.rec(t, "Writer %s (BatchSize 1000, BatchTimeout 5ms, acks=all, 1000 msgs/call): %s; writes=%d errors=%d",
				c.name, rate(probeN, d), st.Writes, st.Errors)
		})
	}
	// Small calls: one message per WriteMessages call is bounded by BatchTimeout.
	ctx := context.Background()
	for _, bt := range []time.Duration{5 * time.Millisecond, time.Second} {
		w := newWriter(p.brokers, "probe-auto", 0)
		w.BatchTimeout = bt
		t0 := time.Now()
		n := 5
		if bt < time.Second {
			n = 200
		}
		for i := range n {
			if err := w.WriteMessages(ctx, messages(i, 1)...); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		p.rec(t, "Writer 1 msg per call, BatchTimeout %v: %v per call", bt, (time.Since(t0) / time.Duration(n)).Round(100*time.Microsecond))
	}
}

// ---------------------------------------------------------------- Reader, group mode

func groupReader(brokers []string, group, topic string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, GroupID: group, Topic: topic,
		StartOffset: kafka.FirstOffset, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond,
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
		CommitInterval: 0, // synchronous CommitMessages
	})
}

func (p *probe) readerGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic, group := "probe-zstd", "g-reader-"+p.name
	r := groupReader(p.brokers, group, topic)
	seen := newSeqSet()
	t0 := time.Now()
	var first time.Duration
	var batch []kafka.Message
	commits, commitErrs := 0, 0
	for seen.len() < probeN {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			r.Close()
			t.Fatalf("FetchMessage after %d: %v", seen.len(), err)
		}
		if first == 0 {
			first = time.Since(t0)
		}
		seen.add(seqOf(m.Value))
		batch = append(batch, m)
		if len(batch) == 500 || seen.len() == probeN {
			if err := r.CommitMessages(ctx, batch...); err != nil {
				commitErrs++
				t.Logf("commit: %v", err)
			}
			commits++
			batch = batch[:0]
		}
	}
	d := time.Since(t0) - first
	p.rec(t, "Reader GroupID (zstd) FetchMessage+CommitMessages per 500: %s after the first message; first message after %v (FindCoordinator+join+sync+offset fetch); commits=%d errors=%d dups=%d",
		rate(probeN, d), first.Round(time.Millisecond), commits, commitErrs, seen.dups)
	t1 := time.Now()
	r.Close()
	p.rec(t, "Reader.Close (leaves group): %v", time.Since(t1).Round(time.Millisecond))

	// Committed offsets and lag through kafka.Client (protocol package).
	c := &kafka.Client{Addr: kafka.TCP(p.brokers...)}
	of, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1, 2, 3}}})
	if err != nil {
		t.Fatalf("OffsetFetch: %v", err)
	}
	var committed int64
	for _, pr := range of.Topics[topic] {
		committed += pr.CommittedOffset
	}
	p.rec(t, "Client.OffsetFetch: sum committed=%d (want %d) err=%v", committed, probeN, of.Error)
	if committed != probeN {
		t.Errorf("committed %d", committed)
	}
	// Client.ConsumerOffsets helper
	co, err := c.ConsumerOffsets(ctx, kafka.TopicAndGroup{Topic: topic, GroupId: group})
	p.rec(t, "Client.ConsumerOffsets: %v %s", co, short(err))

	// Reader with the same group resumes from the commits: nothing left.
	r2 := groupReader(p.brokers, group, topic)
	defer r2.Close()
	c2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	_, err = r2.FetchMessage(c2)
	p.rec(t, "Reader re-joining the group after full commit gets nothing new: %v", errors.Is(err, context.DeadlineExceeded))
}

type readerStat struct {
	mu        sync.Mutex
	parts     map[int]int // messages per partition
	partsLate map[int]int // after the second reader got its first message
	first     time.Time
	commitErr []string
	n         int
}

func (p *probe) readerGroupTwo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topic, group := "probe-snappy", "g-two-"+p.name
	seen := newSeqSet()
	var r2first sync.Once
	r2firstAt := make(chan time.Time, 1)
	var late bool
	var lateMu sync.Mutex
	consume := func(r *kafka.Reader, st *readerStat, isSecond bool, done chan struct{}) {
		defer close(done)
		var batch []kafka.Message
		for seen.len() < probeN {
			c, cc := context.WithTimeout(ctx, 2*time.Second)
			m, err := r.FetchMessage(c)
			cc()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if isSecond {
				r2first.Do(func() {
					r2firstAt <- time.Now()
					lateMu.Lock()
					late = true
					lateMu.Unlock()
				})
			}
			lateMu.Lock()
			isLate := late
			lateMu.Unlock()
			st.mu.Lock()
			if st.first.IsZero() {
				st.first = time.Now()
			}
			st.parts[m.Partition]++
			if isLate {
				st.partsLate[m.Partition]++
			}
			st.n++
			st.mu.Unlock()
			seen.add(seqOf(m.Value))
			batch = append(batch, m)
			if len(batch) >= 200 {
				if err := r.CommitMessages(ctx, batch...); err != nil {
					st.mu.Lock()
					st.commitErr = append(st.commitErr, short(err))
					st.mu.Unlock()
				}
				batch = batch[:0]
			}
			time.Sleep(400 * time.Microsecond) // slow consumer so that the rebalance happens mid-stream
		}
		if len(batch) > 0 {
			_ = r.CommitMessages(ctx, batch...)
		}
	}
	s1 := &readerStat{parts: map[int]int{}, partsLate: map[int]int{}}
	s2 := &readerStat{parts: map[int]int{}, partsLate: map[int]int{}}
	r1 := groupReader(p.brokers, group, topic)
	d1 := make(chan struct{})
	go consume(r1, s1, false, d1)
	for seen.len() < 1000 {
		time.Sleep(10 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("first reader did not consume")
		}
	}
	t2 := time.Now()
	r2 := groupReader(p.brokers, group, topic)
	d2 := make(chan struct{})
	go consume(r2, s2, true, d2)
	var rebalance time.Duration
	select {
	case at := <-r2firstAt:
		rebalance = at.Sub(t2)
	case <-time.After(60 * time.Second):
		p.rec(t, "second reader got no message within 60s")
	}
	<-d1
	<-d2
	t3 := time.Now()
	r1.Close()
	r2.Close()
	p.rec(t, "two Readers in one group: 2nd reader's first message %v after NewReader (HeartbeatInterval 1s); r1 partitions all=%v after r2 started=%v; r2 partitions=%v; consumed r1=%d r2=%d; unique=%d dups=%d; commit errors r1=%v r2=%v; Close x2 %v",
		rebalance.Round(time.Millisecond), s1.parts, s1.partsLate, s2.partsLate, s1.n, s2.n, seen.len(), seen.dups,
		s1.commitErr, s2.commitErr, time.Since(t3).Round(time.Millisecond))
	if len(s2.partsLate) == 0 || len(s1.partsLate) == 0 {
		t.Errorf("both readers should own partitions after the rebalance: r1=%v r2=%v", s1.partsLate, s2.partsLate)
	}
	if seen.missing(probeN) != 0 {
		t.Errorf("missing %d", seen.missing(probeN))
	}
}

// ---------------------------------------------------------------- ConsumerGroup generations

// store is the application's own offset store (emopipe keeps offsets with its data).
type store struct {
	mu   sync.Mutex
	next map[int]int64
}

func (s *store) get(p int) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.next[p]
	return o, ok
}
func (s *store) set(p int, o int64) { s.mu.Lock(); s.next[p] = o; s.mu.Unlock() }
func (s *store) snapshot(parts []int) map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[int]int64{}
	for _, p := range parts {
		if o, ok := s.next[p]; ok {
			m[p] = o
		}
	}
	return m
}

type genEvent struct {
	id    int32
	parts []int
	at    time.Time
}

// member is one ingester-like group member: kafka.ConsumerGroup for membership,
// one partition Reader (no group) per assigned partition, starting at the offset
// from the application's store, and Generation.CommitOffsets for lag visibility.
type member struct {
	name  string
	cg    *kafka.ConsumerGroup
	topic string
	st    *store
	seen  *seqSet
	mu    sync.Mutex
	gens  []genEvent
	ends  []time.Time // generation contexts cancelled (revocation)
	errs  []string
	errAt []time.Time
	done  chan struct{}
	first map[int]int64 // first offset consumed per partition
}

func groupConfig(brokers []string, group, topic string) kafka.ConsumerGroupConfig {
	return kafka.ConsumerGroupConfig{
		ID: group, Brokers: brokers, Topics: []string{topic},
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
		JoinGroupBackoff: time.Second, StartOffset: kafka.FirstOffset, Timeout: 5 * time.Second,
	}
}

func startMember(t *testing.T, name string, cfg kafka.ConsumerGroupConfig, st *store, seen *seqSet) *member {
	cg, err := kafka.NewConsumerGroup(cfg)
	if err != nil {
		t.Fatalf("NewConsumerGroup: %v", err)
	}
	m := &member{name: name, cg: cg, topic: cfg.Topics[0], st: st, seen: seen, done: make(chan struct{}), first: map[int]int64{}}
	go m.loop(cfg.Brokers)
	return m
}

func (m *member) loop(brokers []string) {
	defer close(m.done)
	for {
		gen, err := m.cg.Next(context.Background())
		if err != nil {
			if errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			m.mu.Lock()
			m.errs = append(m.errs, short(err))
			m.errAt = append(m.errAt, time.Now())
			m.mu.Unlock()
			continue
		}
		var parts []int
		for _, pa := range gen.Assignments[m.topic] {
			parts = append(parts, pa.ID)
		}
		sort.Ints(parts)
		m.mu.Lock()
		m.gens = append(m.gens, genEvent{gen.ID, parts, time.Now()})
		m.mu.Unlock()
		for _, pa := range gen.Assignments[m.topic] {
			pa := pa
			gen.Start(func(ctx context.Context) { m.consume(ctx, brokers, pa) })
		}
		gen.Start(func(ctx context.Context) {
			tk := time.NewTicker(300 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-ctx.Done():
					m.mu.Lock()
					m.ends = append(m.ends, time.Now())
					m.mu.Unlock()
					return
				case <-tk.C:
					snap := m.st.snapshot(parts)
					if len(snap) > 0 {
						if err := gen.CommitOffsets(map[string]map[int]int64{m.topic: snap}); err != nil {
							m.mu.Lock()
							m.errs = append(m.errs, "commit: "+short(err))
							m.mu.Unlock()
						}
					}
				}
			}
		})
	}
}

func (m *member) consume(ctx context.Context, brokers []string, pa kafka.PartitionAssignment) {
	start, ok := m.st.get(pa.ID)
	if !ok {
		start = pa.Offset // committed offset, or StartOffset (-2 = first) when none
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: m.topic, Partition: pa.ID,
		MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(start); err != nil {
		m.mu.Lock()
		m.errs = append(m.errs, "SetOffset: "+short(err))
		m.mu.Unlock()
	}
	for {
		msg, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return // revoked / generation ended
			}
			m.mu.Lock()
			m.errs = append(m.errs, fmt.Sprintf("read p%d: %s", pa.ID, short(err)))
			m.mu.Unlock()
			time.Sleep(100 * time.Millisecond) // never return: returning ends the generation
			continue
		}
		m.mu.Lock()
		if _, ok := m.first[pa.ID]; !ok {
			m.first[pa.ID] = msg.Offset
		}
		m.mu.Unlock()
		m.seen.add(seqOf(msg.Value))
		m.st.set(pa.ID, msg.Offset+1)
	}
}

func (m *member) lastGen() (genEvent, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.gens) == 0 {
		return genEvent{}, 0
	}
	return m.gens[len(m.gens)-1], len(m.gens)
}

// waitGen waits until the member has a generation newer than after whose partition count is want.
func (m *member) waitGen(t *testing.T, after, want int, timeout time.Duration) genEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if g, n := m.lastGen(); n > after && len(g.parts) == want {
			return g
		}
		time.Sleep(5 * time.Millisecond)
	}
	g, n := m.lastGen()
	t.Fatalf("%s: no generation #>%d with %d partitions in %v (last #%d %+v, errs %v)", m.name, after, want, timeout, n, g, m.errors())
	return genEvent{}
}

func (m *member) errors() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.errs)
}

func (m *member) close() time.Duration {
	t0 := time.Now()
	m.cg.Close()
	<-m.done
	return time.Since(t0)
}

func (p *probe) generations(t *testing.T) {
	topic, group := "probe-lz4", "g-gen-"+p.name
	st := &store{next: map[int]int64{}}
	for part := range probeParts {
		st.set(part, 100) // explicit start offsets from our own store: skip 100 per partition
	}
	seen := newSeqSet()
	cfg := groupConfig(p.brokers, group, topic)

	t0 := time.Now()
	m1 := startMember(t, "m1", cfg, st, seen)
	g1 := m1.waitGen(t, 0, probeParts, 30*time.Second)
	p.rec(t, "ConsumerGroup m1 first generation %d with partitions %v after %v", g1.id, g1.parts, g1.at.Sub(t0).Round(time.Millisecond))
	want := probeN - probeParts*100
	for deadline := time.Now().Add(30 * time.Second); seen.len() < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	m1.mu.Lock()
	p.rec(t, "explicit store offsets honoured: first offsets consumed per partition %v (want 100 each); consumed %d/%d in %v",
		m1.first, seen.len(), want, time.Since(g1.at).Round(time.Millisecond))
	m1.mu.Unlock()

	t1 := time.Now()
	m2 := startMember(t, "m2", cfg, st, seen)
	g2 := m2.waitGen(t, 0, probeParts/2, 30*time.Second)
	g1b := m1.waitGen(t, 1, probeParts/2, 30*time.Second)
	m1.mu.Lock()
	revoked := m1.ends[0]
	m1.mu.Unlock()
	p.rec(t, "m2 joins: m1 revoked (generation ctx done) after %v; new generation %d m1=%v (after %v) m2=%v (after %v)",
		revoked.Sub(t1).Round(time.Millisecond), g2.id, g1b.parts, g1b.at.Sub(t1).Round(time.Millisecond),
		g2.parts, g2.at.Sub(t1).Round(time.Millisecond))
	if slices.ContainsFunc(g1b.parts, func(x int) bool { return slices.Contains(g2.parts, x) }) {
		t.Errorf("overlapping assignment %v %v", g1b.parts, g2.parts)
	}

	d := m2.close()
	t2 := time.Now()
	g1c := m1.waitGen(t, 2, probeParts, 30*time.Second)
	p.rec(t, "m2.Close (LeaveGroup) took %v; m1 owns %v again %v later", d.Round(time.Millisecond), g1c.parts, g1c.at.Sub(t2).Round(time.Millisecond))

	// Offsets committed through Generation.CommitOffsets are visible to monitoring.
	time.Sleep(700 * time.Millisecond)
	of, err := (&kafka.Client{Addr: kafka.TCP(p.brokers...)}).OffsetFetch(context.Background(),
		&kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1, 2, 3}}})
	if err == nil {
		var got []string
		for _, pr := range of.Topics[topic] {
			got = append(got, fmt.Sprintf("p%d=%d", pr.Partition, pr.CommittedOffset))
		}
		sort.Strings(got)
		p.rec(t, "Generation.CommitOffsets visible via OffsetFetch: %v; store %v", got, st.snapshot([]int{0, 1, 2, 3}))
	}
	p.rec(t, "member errors: m1=%v m2=%v; unique=%d dups=%d", m1.errors(), m2.errors(), seen.len(), seen.dups)
	p.rec(t, "m1.Close took %v", m1.close().Round(time.Millisecond))
	if seen.len() != want {
		t.Errorf("consumed %d, want %d", seen.len(), want)
	}
}

// ---------------------------------------------------------------- offsets / lag

func (p *probe) offsetsAndLag(t *testing.T) {
	ctx := context.Background()
	topic := "probe-gzip"
	c := &kafka.Client{Addr: kafka.TCP(p.brokers...)}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for part := range probeParts {
		req.Topics[topic] = append(req.Topics[topic], kafka.FirstOffsetOf(part), kafka.LastOffsetOf(part))
	}
	resp, err := c.ListOffsets(ctx, req)
	if err != nil {
		t.Fatalf("ListOffsets: %v", err)
	}
	var total int64
	var parts []string
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			p.rec(t, "ListOffsets p%d error %v", po.Partition, po.Error)
		}
		total += po.LastOffset - po.FirstOffset
		parts = append(parts, fmt.Sprintf("p%d=[%d,%d)", po.Partition, po.FirstOffset, po.LastOffset))
	}
	sort.Strings(parts)
	p.rec(t, "Client.ListOffsets first/last: %v total=%d", parts, total)

	conn, err := kafka.DialLeader(ctx, "tcp", p.brokers[0], topic, 0)
	if err != nil {
		t.Fatalf("DialLeader: %v", err)
	}
	first, last, err := conn.ReadOffsets()
	conn.Close()
	p.rec(t, "Conn.ReadOffsets (ListOffsets v1) p0: [%d,%d) %s", first, last, short(err))

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	_ = r.SetOffset(10)
	lag, err := r.ReadLag(ctx)
	p.rec(t, "Reader.ReadLag at offset 10: %d (want %d) %s", lag, last-10, short(err))
	m, err := r.ReadMessage(ctx)
	p.rec(t, "Reader(partition) after SetOffset(10): offset=%d lag()=%d stats.lag=%d %s", m.Offset, r.Lag(), r.Stats().Lag, short(err))
}

// ---------------------------------------------------------------- explicit fetch

func (p *probe) explicitFetch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := "probe-gzip"
	// Reader pinned to a partition, no group.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: topic, Partition: 2,
		MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
	if err := r.SetOffset(1000); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	ok := true
	for i := range 500 {
		m, err := r.ReadMessage(ctx)
		if err != nil || m.Offset != int64(1000+i) || seqOf(m.Value) < 0 {
			ok = false
			t.Errorf("read %d: offset %d err %v", i, m.Offset, err)
			break
		}
	}
	p.rec(t, "Reader{Partition:2}.SetOffset(1000) + 500 ReadMessage contiguous=%v in %v", ok, time.Since(t0).Round(time.Millisecond))
	r.Close()

	// Reading a whole partition from offset 0 (throughput of the partition reader path).
	t0 = time.Now()
	n := 0
	for part := range probeParts {
		conn, err := kafka.DialLeader(ctx, "tcp", p.brokers[0], topic, part)
		if err != nil {
			t.Fatal(err)
		}
		_, last, _ := conn.ReadOffsets()
		if _, err := conn.Seek(0, kafka.SeekAbsolute); err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < last; {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := conn.ReadBatch(1, 8<<20)
			for {
				m, err := b.ReadMessage()
				if err != nil {
					break
				}
				off = m.Offset + 1
				n++
			}
			if err := b.Close(); err != nil && !errors.Is(err, io.EOF) {
				t.Errorf("batch: %v", err)
				break
			}
		}
		conn.Close()
	}
	p.rec(t, "Conn.DialLeader+Seek+ReadBatch whole topic (gzip): %s", rate(n, time.Since(t0)))

	// Reader per partition (what the generation members use), whole topic, zstd.
	t0 = time.Now()
	n = 0
	for part := range probeParts {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: "probe-zstd", Partition: part,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
		lag, _ := r.ReadLag(ctx)
		for range lag {
			if _, err := r.ReadMessage(ctx); err != nil {
				t.Fatal(err)
			}
			n++
		}
		r.Close()
	}
	p.rec(t, "Reader{Partition} whole topic sequentially (zstd): %s", rate(n, time.Since(t0)))

	// Client.Fetch (protocol package, one request).
	c := &kafka.Client{Addr: kafka.TCP(p.brokers...)}
	fr, err := c.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 1, Offset: 42, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
	if err == nil && fr.Error == nil {
		rec, err2 := fr.Records.ReadRecord()
		off := int64(-1)
		if err2 == nil {
			off = rec.Offset
		}
		p.rec(t, "Client.Fetch offset 42: first record offset %d (batches may start earlier: caller must skip) hw=%d %s", off, fr.HighWatermark, short(err2))
	} else {
		p.rec(t, "Client.Fetch: %s / %v", short(err), fr)
	}
	// Out of range.
	r = kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	_ = r.SetOffset(1 << 40)
	c2, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	_, err = r.ReadMessage(c2)
	cancel2()
	r.Close()
	p.rec(t, "Reader offset beyond end (1<<40), default config: %s (retries forever, error only in the ErrorLogger)", short(err))
	r = kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond,
		OffsetOutOfRangeError: true})
	_ = r.SetOffset(1 << 40)
	c2, cancel2 = context.WithTimeout(ctx, 10*time.Second)
	_, err = r.ReadMessage(c2)
	cancel2()
	r.Close()
	p.rec(t, "Reader offset beyond end with OffsetOutOfRangeError=true: %s (errors.Is OffsetOutOfRange=%v)", short(err), errors.Is(err, kafka.OffsetOutOfRange))
}

// ---------------------------------------------------------------- crashed member

// TestProbeMemberProcess is the body of a group member in a child process
// (started by CrashedMember, SIGKILLed there). Skipped unless its env is set.
func TestProbeMemberProcess(t *testing.T) {
	group := os.Getenv("EMOPIPE_PROBE_MEMBER_GROUP")
	if group == "" {
		t.Skip("helper process for CrashedMember")
	}
	cfg := groupConfig(strings.Split(os.Getenv("EMOPIPE_PROBE_MEMBER_BROKERS"), ","), group, os.Getenv("EMOPIPE_PROBE_MEMBER_TOPIC"))
	cfg.SessionTimeout = 6 * time.Second
	cg, err := kafka.NewConsumerGroup(cfg)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		gen, err := cg.Next(ctx)
		cancel()
		if err != nil {
			continue
		}
		fmt.Printf("GEN %d %d\n", gen.ID, len(gen.Assignments[cfg.Topics[0]]))
	}
	os.Exit(0)
}

func (p *probe) crashedMember(t *testing.T) {
	topic, group := "probe-none", "g-crash-"+p.name
	st := &store{next: map[int]int64{}}
	seen := newSeqSet()
	m1 := startMember(t, "m1", groupConfig(p.brokers, group, topic), st, seen)
	defer m1.close()
	m1.waitGen(t, 0, probeParts, 30*time.Second)

	cmd := exec.Command(os.Args[0], "-test.run=^TestProbeMemberProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "EMOPIPE_PROBE_MEMBER_GROUP="+group,
		"EMOPIPE_PROBE_MEMBER_BROKERS="+strings.Join(p.brokers, ","), "EMOPIPE_PROBE_MEMBER_TOPIC="+topic)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck
	got := make(chan int, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var id, n int
			if _, err := fmt.Sscanf(sc.Text(), "GEN %d %d", &id, &n); err == nil {
				got <- n
			}
		}
	}()
	select {
	case n := <-got:
		if n != probeParts/2 {
			t.Fatalf("child got %d partitions", n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("child never joined")
	}
	m1.waitGen(t, 1, probeParts/2, 30*time.Second)
	_, before := m1.lastGen()
	tk := time.Now()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	g := m1.waitGen(t, before, probeParts, 60*time.Second)
	p.rec(t, "child member (SessionTimeout 6s) SIGKILLed: m1 gets all %d partitions back after %v (its 2 partitions idle meanwhile)",
		len(g.parts), g.at.Sub(tk).Round(time.Millisecond))
}

// ---------------------------------------------------------------- broker restart

func (p *probe) brokerRestart(t *testing.T) {
	if p.inst == nil {
		t.Skip("broker not started by kafkatest (kfake or external): cannot restart")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	topic, group := "probe-restart", "g-restart-"+p.name
	CreateTopic(t, p.brokers, topic, probeParts)
	st := &store{next: map[int]int64{}}
	seen := newSeqSet()
	m1 := startMember(t, "m1", groupConfig(p.brokers, group, topic), st, seen)
	defer m1.close()
	m1.waitGen(t, 0, probeParts, 30*time.Second)

	const batch = 100
	var stopWriting atomic.Bool
	// A partition Reader outside any group (static assignment) on every partition.
	var staticMax atomic.Int64
	staticMax.Store(-1)
	for part := range probeParts {
		sr := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: topic, Partition: part,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
		defer sr.Close()
		go func() {
			for ctx.Err() == nil {
				m, err := sr.ReadMessage(ctx)
				if err != nil {
					continue
				}
				for {
					cur := staticMax.Load()
					if int64(seqOf(m.Value)) <= cur || staticMax.CompareAndSwap(cur, int64(seqOf(m.Value))) {
						break
					}
				}
			}
		}()
	}
	w := newWriter(p.brokers, topic, kafka.Zstd)
	w.BatchSize = batch
	defer w.Close()
	type werr struct {
		at  time.Time
		err string
	}
	var (
		wmu      sync.Mutex
		acked    int
		werrs    []werr
		maxStall time.Duration
	)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		last := time.Now()
		for seq := 0; !stopWriting.Load() && ctx.Err() == nil; {
			c, cc := context.WithTimeout(ctx, 30*time.Second)
			err := w.WriteMessages(c, messages(seq, batch)...)
			cc()
			wmu.Lock()
			if err != nil {
				werrs = append(werrs, werr{time.Now(), short(err)})
				wmu.Unlock()
				time.Sleep(200 * time.Millisecond)
				continue // retry the same batch: at-least-once
			}
			if d := time.Since(last); d > maxStall {
				maxStall = d
			}
			last = time.Now()
			seq += batch
			acked = seq
			wmu.Unlock()
			time.Sleep(10 * time.Millisecond) // <= 10k msg/s offered load
		}
	}()
	waitAcked := func(n int) {
		for {
			wmu.Lock()
			a := acked
			wmu.Unlock()
			if a >= n || ctx.Err() != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	resumeAfter := func(label string, up time.Time, gensBefore int) {
		_, gensAtUp := m1.lastGen()
		wmu.Lock()
		ackedAtUp := acked
		wmu.Unlock()
		var ack, caught, fresh, static time.Duration
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline) && (ack == 0 || caught == 0 || fresh == 0 || static == 0); {
			wmu.Lock()
			a := acked
			wmu.Unlock()
			if ack == 0 && a > ackedAtUp {
				ack = time.Since(up)
			}
			// everything acked before the broker came back has been consumed
			if caught == 0 && seen.missing(ackedAtUp) == 0 {
				caught = time.Since(up)
			}
			// a message written after the broker came back has been consumed
			// (the batch in flight at the stop may be partly written: look past it)
			if fresh == 0 && seen.maxSeq() >= ackedAtUp+batch {
				fresh = time.Since(up)
			}
			if static == 0 && staticMax.Load() >= int64(ackedAtUp+batch) {
				static = time.Since(up)
			}
			time.Sleep(5 * time.Millisecond)
		}
		m1.mu.Lock()
		var timeline []string
		for _, g := range m1.gens[gensBefore:] {
			timeline = append(timeline, fmt.Sprintf("gen %d %v @%+v", g.id, g.parts, g.at.Sub(up).Round(time.Millisecond)))
		}
		var errs []string
		for i, at := range m1.errAt {
			if at.After(up.Add(-time.Minute)) && at.Sub(up) > -40*time.Second {
				errs = append(errs, fmt.Sprintf("@%+v %s", at.Sub(up).Round(time.Millisecond), m1.errs[i][:min(len(m1.errs[i]), 60)]))
			}
		}
		m1.mu.Unlock()
		p.rec(t, "%s: relative to broker ready: writer acked again @%v; group member had all pre-restart acks @%v, first post-restart message @%v; generations before stop %d, at ready %d, new: %v; static partition Reader (no group) first post-restart message @%v", label,
			ack.Round(time.Millisecond), caught.Round(time.Millisecond), fresh.Round(time.Millisecond), gensBefore, gensAtUp, timeline, static.Round(time.Millisecond))
		if len(errs) > 6 {
			errs = append(errs[:3], append([]string{"…"}, errs[len(errs)-3:]...)...)
		}
		p.rec(t, "%s: member Next() errors: %v", label, errs)
	}

	waitAcked(5000)
	_, g0 := m1.lastGen()
	t0 := time.Now()
	p.inst.Stop(t)
	tStop := time.Since(t0)
	p.inst.Start(t)
	up := time.Now()
	p.rec(t, "graceful restart: stop %v, start %v", tStop.Round(time.Millisecond), up.Sub(t0.Add(tStop)).Round(time.Millisecond))
	resumeAfter("graceful restart", up, g0)

	waitAcked(15000)
	_, g0 = m1.lastGen()
	t0 = time.Now()
	p.inst.Kill(t)
	p.inst.Start(t)
	up = time.Now()
	p.rec(t, "SIGKILL + start: %v", up.Sub(t0).Round(time.Millisecond))
	resumeAfter("SIGKILL restart", up, g0)

	wmu.Lock()
	end := acked + 2000
	wmu.Unlock()
	waitAcked(end)
	stopWriting.Store(true)
	<-wdone
	wmu.Lock()
	total := acked
	wmu.Unlock()
	for deadline := time.Now().Add(60 * time.Second); seen.len() < total && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	wmu.Lock()
	kinds := map[string]int{}
	for _, e := range werrs {
		kinds[e.err]++
	}
	p.rec(t, "writer (acks=all, retry failed batch): acked %d, failed WriteMessages calls %d, max stall %v, errors %v",
		acked, len(werrs), maxStall.Round(time.Millisecond), kinds)
	wmu.Unlock()
	ek := map[string]int{}
	for _, e := range m1.errors() {
		ek[e]++
	}
	_, gens := m1.lastGen()
	p.rec(t, "consumer: unique %d/%d missing %d dups %d generations %d; member errors %v",
		seen.len(), total, seen.missing(total), seen.dups, gens, ek)
	if seen.missing(total) != 0 {
		t.Errorf("%d acked messages never consumed", seen.missing(total))
	}
	if b, err := os.ReadFile(p.inst.LogFile()); err == nil {
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, group) || strings.HasPrefix(l, "=====") {
				if i := strings.Index(l, "] "); i > 0 && !strings.HasPrefix(l, "=====") {
					l = l[12:i] + l[i+1:] // drop the date
				}
				lines = append(lines, l[:min(len(l), 260)])
			}
		}
		p.rec(t, "broker log lines for %s:\n    %s", group, strings.Join(lines, "\n    "))
	}
}

// ---------------------------------------------------------------- delete

func (p *probe) deleteTopics(t *testing.T) {
	conn, err := kafka.Dial("tcp", p.brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.DeleteTopics("probe-conncreate")
	p.rec(t, "Conn.DeleteTopics: %s", short(err))
	resp, err := (&kafka.Client{Addr: kafka.TCP(p.brokers...)}).DeleteTopics(context.Background(),
		&kafka.DeleteTopicsRequest{Topics: []string{"probe-auto"}})
	if err == nil {
		err = resp.Errors["probe-auto"]
	}
	p.rec(t, "Client.DeleteTopics: %s", short(err))
}

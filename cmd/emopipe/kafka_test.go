package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emopipe/emopipe/internal/kafkatest"
	"github.com/emopipe/emopipe/internal/storecheck"
	"github.com/emopipe/emopipe/tokenize"
)

// streamDoc is one document of the stream tests.
type streamDoc struct {
	ID     string `json:"id"`
	Text   string `json:"text"`
	Domain string `json:"domain"`
}

// streamDocs cuts the bundled corpus into n real documents (paragraphs,
// joined until they are at least 200 bytes) with unique ids, and writes
// them as JSONL chunk files of about n/chunks records each.
func streamDocs(t *testing.T, n, chunks int) ([]streamDoc, []string) {
	t.Helper()
	f, err := os.Open(sample)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, _ := gzip.NewReader(f)
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 64<<20)
	var docs []streamDoc
	for len(docs) < n {
		if !sc.Scan() {
			// Wrap around with new ids: still real text, still unique keys.
			f.Seek(0, 0)
			zr.Reset(f)
			sc = bufio.NewScanner(zr)
			sc.Buffer(nil, 64<<20)
			continue
		}
		var d streamDoc
		json.Unmarshal(sc.Bytes(), &d)
		var cur strings.Builder
		for _, para := range strings.Split(d.Text, "\n\n") {
			cur.WriteString(para)
			cur.WriteString("\n\n")
			if cur.Len() >= 200 && len(docs) < n {
				docs = append(docs, streamDoc{ID: fmt.Sprintf("doc-%06d", len(docs)), Text: cur.String(), Domain: d.Domain})
				cur.Reset()
			}
		}
	}
	dir := t.TempDir()
	var files []string
	per := (n + chunks - 1) / chunks
	for c := 0; c*per < n; c++ {
		path := filepath.Join(dir, fmt.Sprintf("chunk-%03d.jsonl", c))
		var b bytes.Buffer
		for _, d := range docs[c*per : min(n, (c+1)*per)] {
			line, _ := json.Marshal(d)
			b.Write(append(line, '\n'))
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	return docs, files
}

// checkExactlyOnce asserts that the stores together hold every document
// once with its exact tokens, and nothing else.
func checkExactlyOnce(t *testing.T, docs []streamDoc, stores ...string) {
	t.Helper()
	checkExactlyOnceWith(t, "dolma2", docs, stores...)
}

// checkExactlyOnceWith is checkExactlyOnce for stores made with the bundled
// tokenizer tokName.
func checkExactlyOnceWith(t *testing.T, tokName string, docs []streamDoc, stores ...string) {
	t.Helper()
	tok, err := tokenize.Bundled(tokName)
	if err != nil {
		t.Fatal(err)
	}
	eos, _ := tok.EOS()
	union := map[string][]uint32{}
	records := 0
	for _, dir := range stores {
		c, err := storecheck.ReadDir(dir)
		if err != nil {
			t.Fatalf("store %s: %v", dir, err)
		}
		if c.Staged != 0 {
			t.Fatalf("store %s still holds %d staged batches", dir, c.Staged)
		}
		for k, v := range c.Tokens {
			if _, dup := union[k]; dup {
				t.Fatalf("document %s is in two stores", k)
			}
			union[k] = v
		}
		records += len(c.Records)
		for k := range c.Records {
			if _, ok := c.Tokens[k]; !ok {
				t.Fatalf("store %s records document %s but holds none of its tokens", dir, k)
			}
		}
	}
	if len(union) != len(docs) || records != len(docs) {
		t.Fatalf("stores hold %d documents (%d records), want %d", len(union), records, len(docs))
	}
	texts := make([]string, len(docs))
	for i, d := range docs {
		texts[i] = d.Text
	}
	ids := tok.EncodeBatch(texts)
	for i, d := range docs {
		want := append(ids[i], eos)
		if !reflect.DeepEqual(union[d.ID], want) {
			t.Fatalf("document %s: stored tokens differ from its encoding (%d vs %d)", d.ID, len(union[d.ID]), len(want))
		}
	}
}

// proc is a running emopipe process (ingest, run).
type proc struct {
	cmd  *exec.Cmd
	done chan error
	out  *bytes.Buffer
}

// ingester is an `emopipe ingest` process.
type ingester = proc

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1), out: &out}
	go func() { p.done <- cmd.Wait() }()
	return p
}

func startIngest(t *testing.T, brokers, topic, group, store string, extra ...string) *ingester {
	t.Helper()
	return startProc(t, append([]string{"ingest", "--brokers", brokers, "--topic", topic, "--group", group, "--store", store,
		"--seq-len", "256", "--session-timeout", "6s", "--commit-interval", "300ms", "--quiet"}, extra...)...)
}

func (in *proc) kill() {
	in.cmd.Process.Signal(syscall.SIGKILL)
	<-in.done
}

func (in *proc) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-in.done:
		if err != nil {
			t.Fatalf("ingest failed: %v\n%s", err, in.out.String())
		}
	case <-time.After(5 * time.Minute):
		in.kill()
		t.Fatalf("ingest did not finish:\n%s", in.out.String())
	}
}

// produceAll runs `emopipe produce` for each chunk, in order, in the
// background; the returned wait reports the first failure.
func produceAll(t *testing.T, brokers, topic string, files []string, pause time.Duration) func() error {
	var wg sync.WaitGroup
	var perr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, f := range files {
			out, err := exec.Command(binary, "produce", "--brokers", brokers, "--topic", topic, "--compression", "zstd", "--quiet", f).CombinedOutput()
			if err != nil {
				perr = fmt.Errorf("produce %s: %v\n%s", f, err, out)
				return
			}
			time.Sleep(pause)
		}
	}()
	return func() error { wg.Wait(); return perr }
}

// 20,000 documents stream in while the ingester is killed with SIGKILL at
// 20+ random moments and restarted: afterwards every document is in the
// store exactly once with its exact tokens, and nothing else is.
func TestIngestSurvivesKill9(t *testing.T) {
	brokers := strings.Join(kafkatest.Shared(t), ",")
	docs, files := streamDocs(t, 20000, 40)
	topic := uniqueName("kill9")
	kafkatest.CreateTopic(t, strings.Split(brokers, ","), topic, 4)
	store := filepath.Join(t.TempDir(), "store")
	waitProduce := produceAll(t, brokers, topic, files, 150*time.Millisecond)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	kills := 0
	for kills < 20 {
		in := startIngest(t, brokers, topic, topic, store)
		// Kill between 0.3 s and 8 s in: during start-up, rebalances,
		// fetches and commits alike.
		select {
		case err := <-in.done:
			t.Fatalf("ingest exited early: %v\n%s", err, in.out.String())
		case <-time.After(300*time.Millisecond + time.Duration(rng.Int64N(int64(8*time.Second)))):
			in.kill()
			kills++
		}
	}
	if err := waitProduce(); err != nil {
		t.Fatal(err)
	}
	// Catch up and stop once the topic is drained.
	in := startIngest(t, brokers, topic, topic, store, "--idle-exit", "12s")
	in.wait(t)
	checkExactlyOnce(t, docs, store)
	t.Logf("%d documents exactly once after %d SIGKILLs", len(docs), kills)
}

// Restarted right after a kill -9 with a short --idle-exit, the ingester
// waits for the group: its join is held until the killed member's session
// ends (6 s here). It used to count that wait as idleness and exit at
// once, status 0, with nothing read: a catch-up job that did nothing.
func TestIngestRestartedAfterAKillWaitsForItsGroupBeforeIdling(t *testing.T) {
	brokers := strings.Join(kafkatest.Shared(t), ",")
	docs, files := streamDocs(t, 3000, 6)
	topic := uniqueName("rejoin")
	kafkatest.CreateTopic(t, strings.Split(brokers, ","), topic, 2)
	store := filepath.Join(t.TempDir(), "store")
	if err := produceAll(t, brokers, topic, files[:1], 0)(); err != nil {
		t.Fatal(err)
	}
	in := startIngest(t, brokers, topic, topic, store)
	time.Sleep(4 * time.Second) // joined, and reading
	in.kill()
	if err := produceAll(t, brokers, topic, files[1:], 0)(); err != nil {
		t.Fatal(err)
	}
	in = startIngest(t, brokers, topic, topic, store, "--idle-exit", "2s")
	in.wait(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the restarted ingester said:\n%s", in.out.String())
		}
	})
	checkExactlyOnce(t, docs, store)
}

// Stopped (SIGINT) while the broker does not answer, the ingester ends
// within its stop grace (10 s) with its last batch staged, instead of
// retrying that commit for the commit's own bound, 2 minutes. The next
// start settles the batch: nothing is lost or doubled.
func TestIngestStopsPromptlyWhileTheBrokerIsDown(t *testing.T) {
	inst := kafkatest.Start(t)
	brokers := inst.Addr()
	// A backlog (about 60 MB) that one tokenizer goroutine is still
	// working through when the broker stops answering: the stop then has
	// records read since the last commit to commit. (A caught-up ingester
	// commits at once, and its stop finds nothing in flight.)
	docs, files := streamDocs(t, 200000, 8)
	topic := uniqueName("down")
	kafkatest.CreateTopic(t, inst.Brokers(), topic, 2)
	store := filepath.Join(t.TempDir(), "store")
	if err := produceAll(t, brokers, topic, files, 0)(); err != nil {
		t.Fatal(err)
	}
	ports, err := kafkatest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", ports[0])
	in := startIngest(t, brokers, topic, topic, store, "--tokenizer-workers", "1", "--metrics-addr", metrics)
	// Joined, reading and committing: frozen after its first commits, the
	// broker stops it with most of the backlog still to go. (A fixed wait
	// of 3 s found a slow join with nothing read yet, or, on a faster
	// ingester, the backlog done.)
	waitForMetric(t, metrics, "emopipe_ingest_sequences_total", in)
	// Frozen, not killed: a killed broker closes its connections, kafka-go
	// ends the generation at once, and the stop finds nothing in flight.
	inst.Freeze(t)
	t0 := time.Now()
	in.cmd.Process.Signal(os.Interrupt)
	select {
	case <-in.done:
		t.Logf("stopped %v after SIGINT", time.Since(t0).Round(time.Millisecond))
	case <-time.After(time.Minute):
		in.kill()
		inst.Thaw(t)
		t.Fatalf("still stopping a minute after SIGINT, the broker frozen:\n%s", in.out.String())
	}
	inst.Thaw(t)
	if !strings.Contains(in.out.String(), "staged: Kafka did not answer within 10s of the stop") {
		t.Fatalf("the stop did not leave a batch staged (the test stopped nothing in flight):\n%s", in.out.String())
	}
	in = startIngest(t, brokers, topic, topic, store, "--idle-exit", "10s")
	in.wait(t)
	checkExactlyOnce(t, docs, store)
}

// waitForMetric polls the process's /metrics at addr until the metric
// name (summed over its labels) is above 0.
func waitForMetric(t *testing.T, addr, name string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			sum := 0.0
			for _, line := range strings.Split(string(body), "\n") {
				if f := strings.Fields(line); len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
					v, _ := strconv.ParseFloat(f[1], 64)
					sum += v
				}
			}
			if sum > 0 {
				return
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("the process ended (%v) before %s rose above 0:\n%s", err, name, p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.kill()
	t.Fatalf("%s still 0 after a minute:\n%s", name, p.out.String())
}

// Two ingesters share a group, one store each; one is killed mid-run and
// later restarted (which resolves what it had staged). Together the
// stores hold every document exactly once.
func TestTwoIngestersOneKilled(t *testing.T) {
	brokers := strings.Join(kafkatest.Shared(t), ",")
	docs, files := streamDocs(t, 8000, 16)
	topic := uniqueName("pair")
	kafkatest.CreateTopic(t, strings.Split(brokers, ","), topic, 6)
	storeA := filepath.Join(t.TempDir(), "a")
	storeB := filepath.Join(t.TempDir(), "b")
	waitProduce := produceAll(t, brokers, topic, files, 200*time.Millisecond)
	a := startIngest(t, brokers, topic, topic, storeA)
	b := startIngest(t, brokers, topic, topic, storeB, "--idle-exit", "20s")
	time.Sleep(4 * time.Second)
	a.kill()
	if err := waitProduce(); err != nil {
		t.Fatal(err)
	}
	b.wait(t)
	a = startIngest(t, brokers, topic, topic, storeA, "--idle-exit", "10s")
	a.wait(t)
	checkExactlyOnce(t, docs, storeA, storeB)
	ca, _ := storecheck.ReadDir(storeA)
	cb, _ := storecheck.ReadDir(storeB)
	if len(ca.Records) == 0 || len(cb.Records) == 0 {
		t.Fatalf("one ingester got nothing (%d / %d): the test did not split the work", len(ca.Records), len(cb.Records))
	}
	t.Logf("store A %d docs, store B %d docs", len(ca.Records), len(cb.Records))
}

// The broker is restarted mid-stream: the ingester waits, resumes, and
// loses and duplicates nothing.
func TestIngestBrokerRestart(t *testing.T) {
	inst := kafkatest.Start(t)
	brokers := inst.Addr()
	docs, files := streamDocs(t, 6000, 12)
	topic := uniqueName("restart")
	kafkatest.CreateTopic(t, inst.Brokers(), topic, 3)
	store := filepath.Join(t.TempDir(), "store")
	if err := produceAll(t, brokers, topic, files[:3], 0)(); err != nil {
		t.Fatal(err)
	}
	in := startIngest(t, brokers, topic, topic, store, "--idle-exit", "60s")
	// Records keep arriving before, during (the producer retries) and
	// after the outage.
	waitProduce := produceAll(t, brokers, topic, files[3:], 400*time.Millisecond)
	time.Sleep(2 * time.Second)
	inst.Restart(t)
	if err := waitProduce(); err != nil {
		t.Fatal(err)
	}
	in.wait(t)
	checkExactlyOnce(t, docs, store)
}

// uniqueName keeps topics and groups of reruns against one broker apart.
func uniqueName(base string) string {
	return fmt.Sprintf("%s-%d", base, time.Now().UnixNano())
}

// Errors no retry can cure are not retried forever: `emopipe produce` to a
// topic that does not exist, and of a record over the broker's message
// size limit, stops at once with one line saying what is wrong.
func TestProduceFailsFastOnPermanentErrors(t *testing.T) {
	brokers := strings.Join(kafkatest.Shared(t), ",")
	topic := uniqueName("too-large")
	r := rand.New(rand.NewPCG(1, 2))
	text := make([]byte, 2<<20) // over Kafka's default 1 MB, incompressible
	for i := range text {
		text[i] = byte('a' + r.IntN(26))
	}
	line, _ := json.Marshal(streamDoc{ID: "big", Text: string(text), Domain: "x"})
	f := filepath.Join(t.TempDir(), "big.jsonl")
	if err := os.WriteFile(f, append(line, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "produce", "--brokers", brokers, "--topic", topic, "--quiet", f).CombinedOutput()
	if msg := strings.TrimSpace(string(out)); err == nil || strings.Contains(msg, "\n") || !strings.Contains(msg, "no such topic") {
		t.Fatalf("produce to a missing topic: want one line saying so, got %v:\n%.2000s", err, msg)
	}
	cmd := exec.Command(binary, "produce", "--brokers", brokers, "--topic", topic, "--partitions", "1", "--compression", "none", "--quiet", f)
	done := make(chan struct{})
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute): // it used to retry until killed
		cmd.Process.Kill()
		<-done
		t.Fatalf("produce of a 2 MB record still retrying after 2 minutes:\n%.500s", out)
	}
	msg := strings.TrimSpace(string(out))
	if err == nil {
		t.Fatalf("produce of a 2 MB record succeeded: %s", msg)
	}
	if strings.Count(msg, "\n") > 0 || !strings.Contains(msg, "Message Size Too Large") || !strings.Contains(msg, "max.message.bytes") {
		t.Fatalf("want one line naming the size limit, got:\n%.2000s", msg)
	}
	t.Log(msg)

	// Many small records that add up to more than the limit are fine:
	// the writer's batches stay under the topic's max.message.bytes
	// (uncompressed, 1,000 records of 4 KB were refused as one batch).
	var lines []byte
	for i := range 1000 {
		l, _ := json.Marshal(streamDoc{ID: fmt.Sprintf("small-%d", i), Text: string(text[(i%500)*4096 : (i%500+1)*4096]), Domain: "x"})
		lines = append(append(lines, l...), '\n')
	}
	if err := os.WriteFile(f, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(binary, "produce", "--brokers", brokers, "--topic", topic+"-small", "--partitions", "1", "--compression", "none", "--quiet", f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "produced 1000 records") {
		t.Fatalf("produce of 1000 records of 4 KB: %v\n%.2000s", err, out)
	}
}

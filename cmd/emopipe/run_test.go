package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/emopipe/emopipe/internal/kafkatest"
	"github.com/emopipe/emopipe/packing/store"
	"github.com/emopipe/emopipe/train"
)

// runModel is a model small enough for hundreds of CPU steps in a test.
const runModel = `preset: tiny
router: emo
d_model: 32
n_layers: 2
n_heads: 2
num_experts: 8
shared_expert: true
top_k: 3
expert_hidden: 32
pool_min: 2
pool_max: 7
eval_pool_size: 2
`

// stepsLogged reads the trainer's metrics log (what has reached the file).
func stepsLogged(t *testing.T, storeDir string) []train.StepMetrics {
	t.Helper()
	steps, _, err := train.ReadMetricsLog(filepath.Join(storeDir, "train", "metrics.jsonl"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return steps
}

// Documents stream into a real Kafka broker while `emopipe run` trains
// on them; it is killed with SIGKILL twice and restarted. Afterwards:
// every document is in the store once with its exact tokens; the trainer
// trained on the store's sequences once each, in order, none skipped (its
// log and its cursor agree); the steps redone after each kill repeat the
// killed run's losses bit for bit (training continues where it stopped);
// each partition's offset in the store is the topic's end and the
// group's committed offset.
func TestRunSurvivesKill9(t *testing.T) {
	brokers := strings.Join(kafkatest.Shared(t), ",")
	docs, files := streamDocs(t, 1200, 12)
	topic := uniqueName("run")
	kafkatest.CreateTopic(t, strings.Split(brokers, ","), topic, 2)
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	cfgFile := filepath.Join(dir, "model.yaml")
	if err := os.WriteFile(cfgFile, []byte(runModel), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--brokers", brokers, "--topic", topic, "--group", topic, "--store", storeDir,
		"--tokenizer", "dolma2-8k", "--seq-len", "65", "--config", cfgFile, "--steps", "100000", "--batch", "8",
		"--checkpoint-every", "7", "--session-timeout", "6s", "--quiet"}
	waitProduce := produceAll(t, brokers, topic, files, 700*time.Millisecond)

	// Two kills, each once the run has trained past a checkpoint and a few
	// steps more (so that the kill loses steps that must be redone).
	var killed [][]train.StepMetrics
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for kill := 0; kill < 2; kill++ {
		r := startProc(t, append([]string{"run"}, args...)...)
		from := len(stepsLogged(t, storeDir))
		deadline := time.Now().Add(3 * time.Minute)
		for {
			if n := len(stepsLogged(t, storeDir)); n >= from+7+3+2*kill {
				break
			}
			select {
			case err := <-r.done:
				t.Fatalf("run exited early: %v\n%s", err, r.out.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				r.cmd.Process.Kill()
				t.Fatalf("run made no progress:\n%s", r.out.String())
			}
		}
		// A random moment within the next steps: mid-step, mid-commit,
		// mid-checkpoint alike.
		time.Sleep(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
		r.kill()
		killed = append(killed, stepsLogged(t, storeDir))
		t.Logf("kill %d after step %d", kill+1, len(killed[kill]))
	}
	if err := waitProduce(); err != nil {
		t.Fatal(err)
	}
	// The last run ends once the stream is drained and trained on.
	r := startProc(t, append(append([]string{"run"}, args...), "--idle-exit", "10s")...)
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("run failed: %v\n%s", err, r.out.String())
		}
	case <-time.After(15 * time.Minute):
		r.cmd.Process.Kill()
		t.Fatalf("run did not finish:\n%s", r.out.String())
	}
	if !strings.Contains(r.out.String(), "resumed at") || !strings.Contains(r.out.String(), "stream ended") {
		t.Fatalf("last run did not resume and catch up:\n%s", r.out.String())
	}

	checkExactlyOnceWith(t, "dolma2-8k", docs, storeDir)

	final := stepsLogged(t, storeDir)
	var seqs []uint64
	for i, m := range final {
		if m.Step != i+1 {
			t.Fatalf("log line %d is step %d", i, m.Step)
		}
		seqs = append(seqs, m.Seqs...)
	}
	for i, n := range seqs {
		if n != uint64(i) {
			t.Fatalf("trained sequence %d is store sequence %d: each once, in order, none skipped", i, n)
		}
	}
	for k, before := range killed {
		redone := 0
		for i, m := range before {
			if final[i].Loss != m.Loss || final[i].CE != m.CE {
				t.Fatalf("kill %d: step %d had loss %v before the kill, %v in the finished run", k+1, m.Step, m.Loss, final[i].Loss)
			}
			redone++
		}
		if redone == 0 {
			t.Fatalf("kill %d: no steps logged before it", k+1)
		}
	}

	st, err := store.Open(storeDir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if h := st.Header(); h.Tokenizer != "dolma2-8k" || h.SeqLen != 65 {
		t.Fatalf("store header %+v", h)
	}
	state, _, err := train.LoadState(st)
	if err != nil || state == nil {
		t.Fatalf("trainer state: %v", err)
	}
	if state.Step != len(final) || state.Cursor.Pos != uint64(len(seqs)) || !state.Cursor.Follow {
		t.Fatalf("trainer state step %d cursor %+v; log has %d steps, %d sequences", state.Step, state.Cursor, len(final), len(seqs))
	}
	if n := st.NumSequences(); uint64(len(seqs)) != n/8*8 {
		t.Fatalf("trained %d of %d stored sequences; all full batches must be trained", len(seqs), n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(strings.Split(brokers, ",")...)}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: topic, Topics: map[string][]int{topic: {0, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		conn, err := kafka.DialLeader(ctx, "tcp", strings.Split(brokers, ",")[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		end, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := st.SourceState("kafka:" + topic + "/" + string(rune('0'+p)))
		if err != nil {
			t.Fatal(err)
		}
		var ps struct {
			Next int64 `json:"next"`
		}
		json.Unmarshal(raw, &ps)
		var groupAt int64 = -1
		for _, o := range committed.Topics[topic] {
			if o.Partition == p {
				groupAt = o.CommittedOffset
			}
		}
		if ps.Next != end || groupAt != end {
			t.Fatalf("partition %d: store offset %d, group offset %d, topic end %d", p, ps.Next, groupAt, end)
		}
	}
	t.Logf("%d documents, %d sequences, %d steps; kills after steps %d and %d", len(docs), st.NumSequences(), len(final), len(killed[0]), len(killed[1]))
}

// The README's first command with its embedded defaults (fewer steps):
// it streams the bundled corpus through the in-process broker, trains,
// and leaves a report folder with real PNG plots and a summary that
// agrees with the store; `emopipe report` redraws it from the stopped
// store, and a second `run` resumes rather than starting over.
func TestRunEmbeddedDefaultLeavesReport(t *testing.T) {
	storeDir := filepath.Join(t.TempDir(), "store")
	out, errOut, err := emopipe(t, "run", "--store", storeDir, "--steps", "12", "--embedded-rate", "0", "--eval-every", "6", "--quiet")
	if err != nil {
		t.Fatalf("run: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, "trained to step 12") {
		t.Fatalf("run output:\n%s", out)
	}
	reportDir := filepath.Join(storeDir, "report")
	for _, f := range []string{"loss.png", "expert_load.png", "modularity_layer00.png", "modularity_layer01.png"} {
		b, err := os.ReadFile(filepath.Join(reportDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 10000 {
			t.Fatalf("%s is not a drawn PNG (%d bytes)", f, len(b))
		}
	}
	var sum struct {
		Documents        uint64 `json:"documents"`
		Sequences        uint64 `json:"sequences"`
		Steps            int    `json:"steps"`
		SequencesTrained uint64 `json:"sequences_trained"`
		Eval             *struct {
			Loss    float64                    `json:"loss"`
			Domains map[string]json.RawMessage `json:"domains"`
		} `json:"eval"`
		Fresh *train.Freshness `json:"freshness"`
	}
	b, err := os.ReadFile(filepath.Join(reportDir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Steps != 12 || sum.SequencesTrained != 12*8 || sum.Sequences < sum.SequencesTrained || sum.Documents == 0 {
		t.Fatalf("summary %+v", sum)
	}
	if sum.Eval == nil || len(sum.Eval.Domains) != 7 {
		t.Fatalf("summary has no held-out loss for the 7 domains: %s", b)
	}
	if sum.Fresh == nil || sum.Fresh.Docs == 0 {
		t.Fatalf("summary has no freshness lag: %s", b)
	}
	md, err := os.ReadFile(filepath.Join(reportDir, "summary.md"))
	if err != nil || !strings.Contains(string(md), "freshness lag") {
		t.Fatalf("summary.md: %v\n%s", err, md)
	}

	os.RemoveAll(reportDir)
	out, errOut, err = emopipe(t, "report", "--store", storeDir)
	if err != nil {
		t.Fatalf("report: %v\n%s%s", err, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(reportDir, "loss.png")); err != nil {
		t.Fatalf("report did not redraw loss.png: %v", err)
	}

	out, errOut, err = emopipe(t, "run", "--store", storeDir, "--steps", "14", "--embedded-rate", "0", "--eval-every", "0", "--quiet")
	if err != nil {
		t.Fatalf("second run: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, "trained to step 14 (resumed at 12)") {
		t.Fatalf("second run did not resume:\n%s", out)
	}
}

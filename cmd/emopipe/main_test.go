package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emopipe/emopipe/packing/store"
)

// These tests run the emopipe binary as a user would.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "emopipe-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "emopipe")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building emopipe:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func emopipe(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

const sample = "../../testdata/corpus/sample.jsonl.gz"

func storeDigest(t *testing.T, dir string) (string, store.Stats) {
	t.Helper()
	st, err := store.Open(dir, nil, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := st.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d, st.Stats()
}

func TestPackAndInspectAsAUser(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	out, errOut, err := emopipe(t, "pack", sample, "--store", dir, "--seq-len", "512", "--shards", filepath.Join(t.TempDir(), "npy"))
	if err != nil {
		t.Fatalf("pack: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "packed") || !strings.Contains(errOut, "pack done") {
		t.Fatalf("unexpected output:\n%s\n%s", out, errOut)
	}
	out, errOut, err = emopipe(t, "inspect", dir, "--seq", "2")
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, errOut)
	}
	for _, want := range []string{"documents", "sequences", "padding", "domains", "rejects", "⟦doc "} {
		if !strings.Contains(out, want) {
			t.Fatalf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = emopipe(t, "inspect", dir, "--json")
	if err != nil || !strings.Contains(out, `"padding_pct"`) {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
}

func TestOneLineErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if _, e, err := emopipe(t, "pack", sample, "--store", dir, "--quiet"); err != nil {
		t.Fatal(e)
	}
	cases := [][]string{
		{"pack", sample, "--store", dir, "--tokenizer", "gpt2", "--quiet"}, // other tokenizer
		{"pack", "/nonexistent/file.jsonl", "--store", dir},                // missing input
		{"pack", sample}, // no --store
		{"pack", sample, "--store", t.TempDir() + "/x", "--mode", "zigzag"},
		{"inspect", t.TempDir()}, // not a store
		{"pack", sample, "--store", dir, "--tokenizer", "/nonexistent/tokenizer.json"},
	}
	for _, args := range cases {
		_, errOut, err := emopipe(t, args...)
		if err == nil {
			t.Errorf("%v: succeeded", args)
			continue
		}
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "emopipe: ") {
			t.Errorf("%v: want one error line, got:\n%s", args, errOut)
		}
	}
}

// kill -9 at random moments, rerun each time: the finished store equals an
// uninterrupted one (nothing lost, nothing duplicated).
func TestPackSurvivesKill9(t *testing.T) {
	args := func(dir string) []string {
		return []string{"pack", sample, "../../testdata/bad", "--store", dir, "--seq-len", "128", "--commit-every", "16", "--quiet"}
	}
	ref := filepath.Join(t.TempDir(), "ref")
	start := time.Now()
	if _, e, err := emopipe(t, args(ref)...); err != nil {
		t.Fatal(e)
	}
	full := time.Since(start)
	want, wantStats := storeDigest(t, ref)

	// Rounds of: start on an empty store, kill -9 after a random delay,
	// restart, until a run completes; then the store must equal the
	// reference. Rounds continue until at least 20 kills have landed.
	// The delay is drawn from a window that starts at the uninterrupted
	// run's time and widens 10% with every kill in a round: when the
	// machine gets busier than it was for the reference run (CI runs other
	// packages beside this one), a restart's fixed start-up cost can exceed
	// that time and a fixed window would kill every run before its first
	// commit.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	kills, rounds := 0, 0
	for kills < 20 {
		if rounds++; rounds > 40 {
			t.Fatalf("only %d kills landed in %d rounds", kills, rounds)
		}
		dir := filepath.Join(t.TempDir(), "killed")
		window := full
		for run := 0; ; run++ {
			if run > 200 {
				t.Fatal("a round did not finish")
			}
			cmd := exec.Command(binary, args(dir)...)
			var e bytes.Buffer
			cmd.Stderr = &e
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run failed: %v\n%s", err, e.String())
				}
			case <-time.After(time.Duration(rng.Int64N(int64(window)))):
				cmd.Process.Signal(syscall.SIGKILL)
				<-done
				kills++
				window += full / 10
				continue
			}
			break
		}
		if got, stats := storeDigest(t, dir); got != want {
			t.Fatalf("round %d: after kills the store differs: %+v vs %+v", rounds, stats, wantStats)
		}
	}
	t.Logf("%d kills over %d rounds (uninterrupted run %v): every finished store identical to the reference (%d docs, %d sequences)",
		kills, rounds, full, wantStats.Docs, wantStats.Sequences)
}

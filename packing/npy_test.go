package packing

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestShardsReadBack(t *testing.T) {
	cfg := testConfig(BestFit, 16)
	seqs := packAll(t, cfg, randomDocs(newRNG(7), 40, 16))
	dir := t.TempDir()
	w, err := NewShardWriter(dir, 16, 7)
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		if err := w.Write(&seqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	wantShards := (len(seqs) + 6) / 7
	if len(files) != 3*wantShards {
		t.Fatalf("%d files for %d shards", len(files), wantShards)
	}
	var all []uint32
	for s := 0; s < wantShards; s++ {
		f, err := os.Open(filepath.Join(dir, "shard_0000"+string(rune('0'+s))+".tokens.npy"))
		if err != nil {
			t.Fatal(err)
		}
		_, cols, data, err := ReadNPYUint32(f)
		f.Close()
		if err != nil || cols != 16 {
			t.Fatalf("shard %d: cols %d err %v", s, cols, err)
		}
		all = append(all, data...)
	}
	var want []uint32
	for _, s := range seqs {
		want = append(want, s.Tokens...)
	}
	if !reflect.DeepEqual(all, want) {
		t.Fatal("shard tokens differ from the sequences")
	}
	// numpy is the real consumer: when it is installed, let it read them.
	// .ci/run installs numpy and sets EMOPIPE_REQUIRE_NUMPY, so CI cannot
	// skip this check.
	required := os.Getenv("EMOPIPE_REQUIRE_NUMPY") != ""
	py, err := exec.LookPath("python3")
	if err != nil {
		if required {
			t.Fatal("python3 not found")
		}
		t.Skip("python3 not found")
	}
	script := `
import sys, json, numpy as np
d = sys.argv[1]
t = np.load(d + "/shard_00000.tokens.npy"); s = np.load(d + "/shard_00000.spans.npy")
docs = [json.loads(l) for l in open(d + "/shard_00000.docs.jsonl")]
assert t.dtype == np.uint32 and t.shape == (7, 16), (t.dtype, t.shape)
assert s.dtype == np.int64 and s.shape[1] == 5 and s.shape[0] == len(docs)
print(int(t.sum()), int(s[:, 2].sum()))
`
	out, err := exec.Command(py, "-c", script, dir).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No module named 'numpy'") && !required {
			t.Skip("numpy not installed")
		}
		t.Fatalf("numpy could not read the shard: %v\n%s", err, out)
	}
	var sum, spanLen uint64
	for _, s := range seqs[:7] {
		for _, v := range s.Tokens {
			sum += uint64(v)
		}
		for _, sp := range s.Spans {
			spanLen += uint64(sp.Length)
		}
	}
	if got := strings.TrimSpace(string(out)); got != strings.TrimSpace(fmtU(sum)+" "+fmtU(spanLen)) {
		t.Fatalf("numpy saw %s, want %d %d", got, sum, spanLen)
	}
}

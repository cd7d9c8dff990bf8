package tokenize

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/emopipe/emopipe/internal/procstat"
)

func goldenTexts(b testing.TB) ([]string, int) {
	docs := loadGoldenDocs(b)
	texts := make([]string, len(docs))
	n := 0
	for i, d := range docs {
		texts[i] = d.raw
		n += len(d.raw)
	}
	return texts, n
}

// BenchmarkEncode measures Encode (one goroutine) and EncodeBatch (GOMAXPROCS) over the
// golden documents with warm caches; bytes/s via SetBytes, tokens/s as a metric.
func BenchmarkEncode(b *testing.B) {
	texts, size := goldenTexts(b)
	for _, name := range BundledNames() {
		tk := bundledT(b, name)
		tokens := 0
		for _, ids := range tk.EncodeBatch(texts) {
			tokens += len(ids)
		}
		b.Run(name+"/Encode", func(b *testing.B) {
			b.SetBytes(int64(size))
			var dst []uint32
			for b.Loop() {
				for _, s := range texts {
					dst = tk.AppendEncode(dst[:0], s)
				}
			}
			b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run(name+"/EncodeBatch", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				tk.EncodeBatch(texts)
			}
			b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkEncodeCold measures a fresh encoder (empty pretoken cache) per pass.
func BenchmarkEncodeCold(b *testing.B) {
	texts, size := goldenTexts(b)
	tk := bundledT(b, "dolma2")
	b.SetBytes(int64(size))
	var dst []uint32
	for b.Loop() {
		e := newEncoder(tk)
		for _, s := range texts {
			dst = e.encode(dst[:0], s)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	texts, size := goldenTexts(b)
	tk := bundledT(b, "dolma2")
	ids := tk.EncodeBatch(texts)
	b.SetBytes(int64(size))
	for b.Loop() {
		for _, x := range ids {
			tk.Decode(x)
		}
	}
}

// BenchmarkBuildBundled is the one-time cost of Bundled (merges derived from ranks).
func BenchmarkBuildBundled(b *testing.B) {
	for _, name := range BundledNames() {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := buildBundled(name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkLoadCL100K(b *testing.B) {
	for b.Loop() {
		if _, err := Load("testdata/cl100k.json.gz"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCorpusThroughput is the Go side of scripts/tokenizer/bench.sh. It runs only when
// EMOPIPE_TOKENIZE_BENCH names a directory holding corpus.jsonl ({"text": ...} per
// line); for each bundled tokenizer it times EncodeBatch (one warm-up pass, then the
// median of EMOPIPE_TOKENIZE_BENCH_RUNS passes, default 3; wall and process CPU time) and writes
// go_<name>.ids (per document: uint32 count, then the ids, little endian) and
// go_results.json.
func TestCorpusThroughput(t *testing.T) {
	dir := os.Getenv("EMOPIPE_TOKENIZE_BENCH")
	if dir == "" {
		t.Skip("set EMOPIPE_TOKENIZE_BENCH=dir (see scripts/tokenizer/bench.sh)")
	}
	runs := 3
	if v := os.Getenv("EMOPIPE_TOKENIZE_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	f, err := os.Open(filepath.Join(dir, "corpus.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	size := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<30)
	for sc.Scan() {
		var rec struct{ Text string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, rec.Text)
		size += len(rec.Text)
	}
	f.Close()
	type result struct {
		Tokenizer  string    `json:"tokenizer"`
		GOMAXPROCS int       `json:"gomaxprocs"`
		Bytes      int       `json:"bytes"`
		Docs       int       `json:"docs"`
		Tokens     int       `json:"tokens"`
		Seconds    []float64 `json:"seconds"`
		CPUSeconds []float64 `json:"cpu_seconds"` // user+sys of the process during each pass
		LoadSecs   float64   `json:"load_seconds"`
	}
	var results []result
	for _, name := range BundledNames() {
		start := time.Now()
		tk, err := buildBundled(name) // not the shared instance: its load time and a cold cache
		if err != nil {
			t.Fatal(err)
		}
		r := result{Tokenizer: name, GOMAXPROCS: runtime.GOMAXPROCS(0), Bytes: size, Docs: len(texts),
			LoadSecs: time.Since(start).Seconds()}
		ids := tk.EncodeBatch(texts) // warm-up, as for the Python tools
		for i := 0; i < runs; i++ {
			runtime.GC()
			start, cpu := time.Now(), procstat.CPU()
			ids = tk.EncodeBatch(texts)
			r.Seconds = append(r.Seconds, time.Since(start).Seconds())
			r.CPUSeconds = append(r.CPUSeconds, (procstat.CPU() - cpu).Seconds())
		}
		sort.Float64s(r.Seconds)
		sort.Float64s(r.CPUSeconds)
		out, err := os.Create(filepath.Join(dir, "go_"+name+".ids"))
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriterSize(out, 1<<20)
		var buf []byte
		for _, x := range ids {
			r.Tokens += len(x)
			buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(len(x)))
			for _, id := range x {
				buf = binary.LittleEndian.AppendUint32(buf, id)
			}
			w.Write(buf)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		out.Close()
		results = append(results, r)
		t.Logf("%s: %d bytes, %d tokens, median %.3fs, %.1f MB/s", name, size, r.Tokens, r.Seconds[len(r.Seconds)/2],
			float64(size)/1e6/r.Seconds[len(r.Seconds)/2])
	}
	js, _ := json.MarshalIndent(results, "", " ")
	if err := os.WriteFile(filepath.Join(dir, "go_results.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
}

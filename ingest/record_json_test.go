package ingest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// jsonCases are records that the fast path must decode exactly as
// encoding/json does, or leave to it.
var jsonCases = []string{
	`{"id":"a","text":"hello","domain":"code"}`,
	` {"text" : "x" , "id" : 12 } `,
	`{"id":1e3,"text":"x"}`,
	`{"id":-0.5E-2,"text":"x"}`,
	`{"id":null,"text":"x","domain":null}`,
	`{"id":"","text":"x"}`,
	`{"id":true,"text":"x"}`,
	`{"id":{"n":1},"text":"x"}`,
	`{"text":"line\nnext\ttab \"q\" back\\slash \/ \b\f\r \u00e9 \u20ac \ud83d\ude00 \u0000"}`,
	`{"text":"lone \ud800 surrogate"}`,
	`{"text":"low \udc00 first"}`,
	`{"text":"pair broken \ud800\u0041"}`,
	`{"text":"é – 😀 raw UTF-8"}`,
	`{"text":"x","text":"y"}`,
	`{"id":"a","id":"b","text":"x"}`,
	`{"te\u0078t":"escaped name"}`,
	`{"a":1,"a":2,"text":"x"}`,
	`{"text":"x","extra":[1,2.5,-3e+4,true,false,null,{"k":["v",{}],"e":[]},"s\"\\"]}`,
	`{"text":"x"}x`,
	`{"text":"x",}`,
	`{"text":01}`,
	`{"text":"x","n":1.}`,
	`{"text":"x","n":-}`,
	`{"text":"x","n":tru}`,
	`{"text":"x","n":[1,]}`,
	`{"text":"x" "id":"a"}`,
	`{"text":null}`,
	`{"text":5}`,
	`{"text":["x"]}`,
	`{"id":"a"}`,
	`{}`,
	`[]`,
	`null`,
	`"text"`,
	`{"text":"tab	raw"}`,
	`{"text":"x\q"}`,
	`{"text":"x\u12"}`,
	`{"text":"unterminated`,
	"{\"text\":\"del \x7f ok\"}",
	`{"text":"` + strings.Repeat("long text without escapes ", 200) + `"}`,
	`{"text":"` + strings.Repeat("a\\n", 300) + `"}`,
}

// The fast path either gives encoding/json's Document or defers to it.
func TestParseFastMatchesEncodingJSON(t *testing.T) {
	for _, fields := range []Fields{DefaultFields(), {ID: "doc_id", Text: "body", Domain: "src"}} {
		for _, c := range jsonCases {
			c = strings.NewReplacer(`"id"`, `"`+fields.ID+`"`, `"text"`, `"`+fields.Text+`"`, `"domain"`, `"`+fields.Domain+`"`).Replace(c)
			checkFast(t, fields, []byte(c))
		}
	}
}

// The common shapes take the fast path: this is what makes it fast.
func TestParseFastTakesCommonRecords(t *testing.T) {
	for _, c := range []string{
		`{"id":"a","text":"hello","domain":"code"}`,
		`{"id":7,"text":"a\nb \u00e9 \ud83d\ude00","domain":"law","meta":{"x":[1,null]}}`,
	} {
		if _, ok := DefaultFields().parseFast([]byte(c), "fb"); !ok {
			t.Errorf("%s: fast path declined", c)
		}
	}
}

func checkFast(t *testing.T, f Fields, line []byte) {
	t.Helper()
	if !utf8.Valid(line) {
		return // ParseJSON rejects before either path
	}
	fast, ok := f.parseFast(line, "fallback")
	general, rej := f.parseGeneral(line, "fallback")
	if !ok {
		return
	}
	if rej != nil {
		t.Fatalf("%q: fast path accepted what encoding/json rejects (%s: %s)", line, rej.Reason, rej.Detail)
	}
	if !reflect.DeepEqual(fast, general) {
		t.Fatalf("%q: fast path %+v, encoding/json %+v", line, fast, general)
	}
}

func FuzzParseFast(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	if b, err := os.ReadFile(filepath.Join("..", "testdata", "bad", "bad.jsonl")); err == nil {
		for _, l := range bytes.Split(b, []byte("\n")) {
			f.Add(l)
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		checkFast(t, DefaultFields(), line)
	})
}

// A record marshalled by encoding/json round-trips through the fast path
// whatever its text holds.
func FuzzParseFastRoundTrip(f *testing.F) {
	f.Add("hello", "id-1", "code")
	f.Add("a\n\"b\"\\ \u2028 \x00 \x1f é 😀", "7", "")
	f.Fuzz(func(t *testing.T, text, id, domain string) {
		if !utf8.ValidString(text) || !utf8.ValidString(id) || !utf8.ValidString(domain) {
			return
		}
		line, _ := json.Marshal(map[string]string{"id": id, "text": text, "domain": domain})
		doc, ok := DefaultFields().parseFast(line, "fb")
		if !ok {
			t.Fatalf("%s: fast path declined", line)
		}
		if string(doc.Text) != text || doc.Domain != domain || (id != "" && doc.ID != id) {
			t.Fatalf("%s: got %+v", line, doc)
		}
		checkFast(t, DefaultFields(), line)
	})
}

// BenchmarkParseJSON decodes the bundled sample's records (real text, with
// escapes) through ParseJSON and through encoding/json alone.
func BenchmarkParseJSON(b *testing.B) {
	src := NewFileSource([]string{filepath.Join("..", "testdata", "corpus", "sample.jsonl.gz")}, DefaultFileConfig(), FilePos{})
	var lines [][]byte
	size := 0
	for {
		it, err := src.Next()
		if err != nil {
			break
		}
		if it.Doc != nil {
			line, _ := json.Marshal(map[string]string{"id": it.Doc.ID, "text": string(it.Doc.Text), "domain": it.Doc.Domain})
			lines = append(lines, line)
			size += len(line)
		}
	}
	src.Close()
	for _, bc := range []struct {
		name  string
		parse func(Fields, []byte, string) (Document, *Reject)
	}{{"ParseJSON", Fields.ParseJSON}, {"encoding-json", Fields.parseGeneral}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				for _, l := range lines {
					if _, rej := bc.parse(DefaultFields(), l, "x"); rej != nil {
						b.Fatal(rej)
					}
				}
			}
		})
	}
}

// A Kafka record's document and rejects name the partition as SourceName
// does, and the record's offset.
func TestKafkaParseNamesSourceAndPosition(t *testing.T) {
	c := DefaultKafkaConfig()
	c.Topic = "docs"
	doc, rej := c.Parse(Record{Partition: 3, Offset: 42, Value: []byte(`{"text":"hi"}`)})
	if rej != nil || doc.Source != c.SourceName(3) || doc.Position != "offset 42" || doc.ID != "docs/3/42" {
		t.Fatalf("doc %+v, reject %+v", doc, rej)
	}
	_, rej = c.Parse(Record{Partition: 3, Offset: 43, Value: []byte(`{"id":"x"}`)})
	if rej == nil || rej.Source != c.SourceName(3) || rej.Position != "offset 43" || rej.Reason != ReasonMissingText {
		t.Fatalf("reject %+v", rej)
	}
}

// A record with a null value (a compacted topic's deletion of its key) is
// a tombstone, named by its key, in either format; an empty value is not.
func TestKafkaParseTellsTombstonesFromEmptyRecords(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		c := DefaultKafkaConfig()
		c.Topic, c.Format = "docs", format
		_, rej := c.Parse(Record{Partition: 1, Offset: 7, Key: []byte("doc-9")})
		if rej == nil || rej.Reason != ReasonTombstone || rej.DocKey != "doc-9" || rej.Position != "offset 7" {
			t.Fatalf("%s: null value: reject %+v", format, rej)
		}
		doc, rej := c.Parse(Record{Partition: 1, Offset: 8, Key: []byte("doc-9"), Value: []byte{}})
		if rej != nil && rej.Reason == ReasonTombstone {
			t.Fatalf("%s: empty value taken for a tombstone: doc %+v", format, doc)
		}
	}
}

// The wide copy (AVX2) decodes exactly as the eight-byte loop does, with a
// special byte at every position of the first and second 32-byte step and
// near the end of the string.
func TestWideCopyMatchesEightByteLoop(t *testing.T) {
	if copyPlain == nil {
		t.Skip("no wide copy on this CPU/build")
	}
	wide := copyPlain
	defer func() { copyPlain = wide }()
	specials := []string{`\n`, `\"`, `\\`, `\t`, `\u00e9`, `\ud83d\ude00`, `\/`, "\x01", `"`}
	for n := 0; n < 100; n++ {
		for at := 0; at <= n; at++ {
			for _, sp := range specials {
				text := strings.Repeat("a", at) + sp + strings.Repeat("é", (n-at)/2)
				line := []byte(`{"id":"x","text":"` + text + `"}`)
				copyPlain = wide
				w, wok := DefaultFields().parseFast(line, "fb")
				copyPlain = nil
				s, sok := DefaultFields().parseFast(line, "fb")
				if wok != sok || string(w.Text) != string(s.Text) {
					t.Fatalf("%q: wide %v %q, eight-byte %v %q", line, wok, w.Text, sok, s.Text)
				}
			}
		}
	}
}

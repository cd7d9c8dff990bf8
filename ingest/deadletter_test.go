package ingest

import (
	"bytes"
	"strings"
	"testing"
)

// A dead letter over the dead-letter topic's limit is cut to fit, and the
// cut is recorded; one that fits is sent as it is.
func TestDeadLetterIsCutToFitItsTopic(t *testing.T) {
	headers := func() map[string]string {
		return map[string]string{"emopipe-reason": ReasonOversize, "emopipe-source": "docs/3", "emopipe-position": "offset 17"}
	}
	key, value := []byte("doc-17"), bytes.Repeat([]byte("x"), 2_000_000)
	const limit = 1_000_000

	h := headers()
	k, v := fitLetter(key, value, h, limit)
	size := len(k) + len(v)
	for name, val := range h {
		size += len(name) + len(val)
	}
	if size > limit-1024 || !bytes.Equal(k, key) || !bytes.HasPrefix(value, v) || len(v) < limit-4096 {
		t.Fatalf("cut letter: key %q, value %d bytes, %d in all; want the key, a prefix of the value, under %d", k, len(v), size, limit)
	}
	if note := h["emopipe-truncated"]; !strings.Contains(note, "value 2000000 bytes") {
		t.Fatalf("the cut is not recorded: %q", note)
	}

	h = headers()
	k, v = fitLetter(key, value[:1000], h, limit)
	if !bytes.Equal(k, key) || len(v) != 1000 || h["emopipe-truncated"] != "" {
		t.Fatalf("a letter that fits was changed: key %q, value %d bytes, headers %v", k, len(v), h)
	}

	h = headers() // a key larger than the limit: cut too
	k, v = fitLetter(bytes.Repeat([]byte("k"), 3_000_000), value, h, limit)
	if len(v) != 0 || len(k) > limit-1024 || h["emopipe-truncated"] == "" {
		t.Fatalf("letter with a huge key: key %d bytes, value %d bytes", len(k), len(v))
	}
}

package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Document is one raw document on its way to the tokenizer.
type Document struct {
	// ID is the document's key in the store: the record's id field, or a
	// name derived from where it was found when it has none.
	ID     string
	Text   []byte
	Domain string
	// Source names the stream the document came from (a file set, a topic
	// partition); Position locates it inside that stream for error reports.
	Source   string
	Position string
	// Time is the record's own timestamp (Unix ms), zero if it has none.
	Time int64
}

// Reject is a record that could not become a Document.
type Reject struct {
	Source   string
	Position string
	DocKey   string
	Reason   string // one of the Reason* constants
	Detail   string
	Bytes    int
}

// Reasons for rejection, stable strings recorded in the store and the DLQ.
const (
	ReasonMalformedJSON = "malformed_json"
	ReasonMissingText   = "missing_text"
	ReasonEmptyText     = "empty_text"
	ReasonInvalidUTF8   = "invalid_utf8"
	ReasonBinary        = "binary"
	ReasonOversize      = "oversize"
	ReasonDuplicateID   = "duplicate_id"
	ReasonIDTooLong     = "id_too_long"
	ReasonUnreadable    = "unreadable"
	ReasonDecompress    = "decompress_error"
	// ReasonTombstone is a record with a null value: in a compacted topic
	// the deletion of its key. The store keeps what it has (packed
	// sequences are not taken back); the tombstone is counted, not taken
	// for malformed input.
	ReasonTombstone = "tombstone"
	// ReasonOffsetsDeleted records Kafka offsets that the topic's retention
	// deleted before they were read (Position "offsets A-B"): the records
	// are gone, and the store says so.
	ReasonOffsetsDeleted = "offsets_deleted"
)

// Fields names the JSON fields of a record.
type Fields struct {
	ID     string `yaml:"id" json:"id"`         // default "id"
	Text   string `yaml:"text" json:"text"`     // default "text"
	Domain string `yaml:"domain" json:"domain"` // default "domain"
}

// DefaultFields are id, text and domain.
func DefaultFields() Fields { return Fields{ID: "id", Text: "text", Domain: "domain"} }

// ParseJSON decodes one JSON record into a Document, or says why it cannot.
// The caller fills Source and Position; fallbackID is used when the record
// has no id.
// Invalid UTF-8 anywhere in the line is rejected here, because
// encoding/json would otherwise replace it silently; callers that repair
// text do so before calling.
func (f Fields) ParseJSON(line []byte, fallbackID string) (Document, *Reject) {
	if !utf8.Valid(line) {
		return Document{}, &Reject{DocKey: fallbackID, Reason: ReasonInvalidUTF8, Detail: fmt.Sprintf("invalid UTF-8 at byte %d of the record", invalidAt(line)), Bytes: len(line)}
	}
	if doc, ok := f.parseFast(line, fallbackID); ok {
		return doc, nil
	}
	return f.parseGeneral(line, fallbackID)
}

// parseGeneral is ParseJSON through encoding/json: it handles every record
// parseFast passes on and words every reject.
func (f Fields) parseGeneral(line []byte, fallbackID string) (Document, *Reject) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return Document{}, &Reject{Reason: ReasonMalformedJSON, Detail: shorten(err.Error()), Bytes: len(line)}
	}
	doc := Document{ID: fallbackID}
	if raw, ok := m[f.ID]; ok {
		id, err := scalarString(raw)
		if err != nil {
			return doc, &Reject{Reason: ReasonMalformedJSON, Detail: fmt.Sprintf("field %q: %v", f.ID, err), Bytes: len(line)}
		}
		if id != "" {
			doc.ID = id
		}
	}
	raw, ok := m[f.Text]
	if !ok || string(raw) == "null" {
		return doc, &Reject{DocKey: doc.ID, Reason: ReasonMissingText, Detail: fmt.Sprintf("no %q field", f.Text), Bytes: len(line)}
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return doc, &Reject{DocKey: doc.ID, Reason: ReasonMissingText, Detail: fmt.Sprintf("field %q is not a string", f.Text), Bytes: len(line)}
	}
	doc.Text = []byte(text)
	if raw, ok := m[f.Domain]; ok {
		d, err := scalarString(raw)
		if err == nil {
			doc.Domain = d
		}
	}
	return doc, nil
}

// scalarString accepts a JSON string or number (ids are often numbers).
func scalarString(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return n.String(), nil
	}
	if string(raw) == "null" {
		return "", nil
	}
	return "", fmt.Errorf("want a string or number, got %s", shorten(string(raw)))
}

func shorten(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// invalidAt is the offset of the first invalid UTF-8 byte, or -1.
func invalidAt(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

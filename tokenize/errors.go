package tokenize

import (
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped by every error about a tokenizer.json component or option
// this package does not implement. Such files are rejected rather than encoded with
// ids that could differ from Hugging Face tokenizers.
var ErrUnsupported = errors.New("unsupported tokenizer feature")

// ErrUnknownBundled is returned by Bundled for a name it does not ship.
var ErrUnknownBundled = errors.New("unknown bundled tokenizer")

// UnsupportedError locates an unsupported feature in a tokenizer.json.
type UnsupportedError struct {
	Name   string // tokenizer name given to Parse/Load
	Field  string // JSON path, e.g. "pre_tokenizer.pretokenizers[0].pattern"
	Detail string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("tokenize: %s: unsupported %s: %s", e.Name, e.Field, e.Detail)
}

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

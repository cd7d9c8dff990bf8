// Package tokenize turns text into token ids exactly as Hugging Face tokenizers does
// for byte-level BPE tokenizers (GPT-2 and cl100k style, including the EMO tokenizer
// "dolma2"), and back.
//
// Key types:
//
//   - Tokenizer: loaded from a tokenizer.json (Load, Parse) or built from the tiktoken
//     rank files that ship with the binary (Bundled). Immutable and safe for
//     concurrent use; EncodeBatch spreads a batch over GOMAXPROCS goroutines.
//   - AddedToken: an added/special token with Hugging Face's matching flags.
//   - UnsupportedError: a tokenizer.json component this package does not implement.
//     Such files are rejected (errors.Is(err, ErrUnsupported)) instead of being encoded
//     with ids that might differ from the reference.
//
// Exactness is pinned by golden files made with the reference implementations
// (scripts/tokenizer/make_goldens.py); docs/tokenizer.md explains the code paths.
package tokenize

// Package emopipe holds what the emopipe binary bundles from the
// repository's testdata: the real multi-domain sample corpus that
// `emopipe run` streams through its embedded broker when no --brokers are
// given (testdata/corpus/LICENSES.md names its sources and licences).
package emopipe

import _ "embed"

// SampleCorpus is testdata/corpus/sample.jsonl.gz: 630 documents, 90 from
// each of 7 domains ({"id","text","domain"} JSON lines, gzip).
//
//go:embed testdata/corpus/sample.jsonl.gz
var SampleCorpus []byte

// HeldoutCorpus is testdata/corpus/heldout.jsonl.gz: 70 other documents,
// 10 per domain, for held-out evaluation.
//
//go:embed testdata/corpus/heldout.jsonl.gz
var HeldoutCorpus []byte

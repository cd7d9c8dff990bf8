// Package store is emopipe's durable home for packed data: a Badger
// directory holding a header, packed sequences by dense sequence number,
// accepted-document records, per-source resume state, rejected records and
// (later) trainer state.
//
// The key types are Store (Open, Commit, Sequence), Batch (what one
// transaction makes durable together), StagedBatch (Stage, Finalize: a
// batch whose commit point is outside the store, see stage.go) and Reader
// (a seeded, shuffled, resumable walk over the sequences for training).
//
// Exactly-once ingestion rests on one rule: the sequences a source
// produced, the documents it accepted, its rejects, and its position and
// unfinished packer tail are written in ONE Badger transaction (Badger's
// WriteBatch is not atomic across its internal flushes, so it is not used).
// After a crash the store names where each source resumes, and nothing it
// already holds is packed again.
package store

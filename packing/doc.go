// Package packing turns token streams into fixed-length training sequences
// that remember where each document starts and ends.
//
// The key types are Packer (pure and deterministic: the same documents in the
// same order give the same sequences, whatever the machine), Sequence (token
// ids plus the document Spans it holds) and the .npy shard writer.
// Document boundaries are routing metadata for EMO: the trainer turns spans
// into per-token document segments, and every token of one document chooses
// its experts from one pool.
//
// The store that keeps sequences durable lives in packing/store.
package packing

// Package ingest reads raw documents from where they live — files now,
// Kafka topics in source_kafka.go — and hands them on as Documents, or as
// Rejects when a record cannot be a document (malformed JSON, no text,
// unreadable file, ...). It knows file formats and Kafka, nothing about
// tokens or the store: a source reports positions, and its caller decides
// when they are durable.
//
// Key types: Document, Reject, FileSource.
package ingest

// Package pipelines wires emopipe's stages into jobs: Pack (files →
// store), and later Ingest (Kafka → store) and Run (Kafka → store →
// train). A pipeline owns every goroutine it starts, and its shutdown
// order is: stop reading, drain what was read, commit, close.
package pipelines

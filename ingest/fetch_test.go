package ingest

import (
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

// batch is a transactional (producer ≥ 0) or plain (-1) record batch of
// records at offsets base, base+1, ...
func batch(producer, base int64, n int) protocol.RecordReader {
	recs := make([]protocol.Record, n)
	for i := range recs {
		recs[i] = protocol.Record{Offset: base + int64(i), Value: protocol.NewBytes(fmt.Appendf(nil, "v%d", base+int64(i)))}
	}
	b := &protocol.RecordBatch{BaseOffset: base, ProducerID: producer, Records: protocol.NewRecordReader(recs...)}
	if producer >= 0 {
		b.Attributes = protocol.Transactional
	}
	return b
}

// marker is producer's commit or abort marker at offset.
func marker(producer, offset int64, abort bool) protocol.RecordReader {
	cr := protocol.ControlRecord{Offset: offset, Type: 1}
	if abort {
		cr.Type = 0
	}
	return &protocol.ControlBatch{BaseOffset: offset, ProducerID: producer, Attributes: protocol.Control | protocol.Transactional,
		Records: protocol.NewRecordReader(cr.Record())}
}

// A partition as the broker returns it: producer 7's first transaction is
// aborted (it is listed with its first offset), its second, after the
// abort marker, committed; producer 8's interleaves and commits; plain
// records around them.
func partitionLog() []protocol.RecordReader {
	return []protocol.RecordReader{
		batch(-1, 0, 2),
		batch(7, 2, 2), // aborted
		batch(8, 4, 2),
		batch(7, 6, 1), // aborted
		marker(7, 7, true),
		marker(8, 8, false),
		batch(7, 9, 2),
		batch(-1, 11, 1),
		marker(7, 12, false),
	}
}

var abortedTxns = []fetchapi.ResponseTransaction{{ProducerID: 7, FirstOffset: 2}}

func offsets(recs []Record) []int64 {
	var out []int64
	for _, r := range recs {
		if string(r.Value) != fmt.Sprintf("v%d", r.Offset) {
			panic(fmt.Sprintf("record %d holds %q", r.Offset, r.Value))
		}
		out = append(out, r.Offset)
	}
	return out
}

func TestReadCommittedLeavesOutAbortedTransactionsAndMarkers(t *testing.T) {
	for _, c := range []struct {
		name      string
		committed bool
		pos       int64
		want      string
	}{
		{"read_committed", true, 0, "[0 1 4 5 9 10 11]"},
		{"read_committed from inside the aborted transaction", true, 3, "[4 5 9 10 11]"},
		{"read_uncommitted", false, 0, "[0 1 2 3 4 5 6 9 10 11]"},
	} {
		recs, next, err := readBatches(&protocol.RecordStream{Records: partitionLog()}, c.pos, 1<<20, newAbortFilter(c.committed, abortedTxns))
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(offsets(recs)); got != c.want || next != 13 {
			t.Errorf("%s: offsets %s, next %d; want %s, next 13 (past the last marker)", c.name, got, next, c.want)
		}
	}
}

// The broker bounds a response by its compressed size: readBatches stops
// after the record that reaches the bound in decompressed values, and the
// next fetch starts after it.
func TestReadBatchesStopsAtItsByteBound(t *testing.T) {
	recs, next, err := readBatches(&protocol.RecordStream{Records: partitionLog()}, 0, 5, newAbortFilter(true, abortedTxns))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(offsets(recs)); got != "[0 1 4]" || next != 5 {
		t.Fatalf("offsets %s, next %d; want [0 1 4] (values of 2 bytes, bound 5), next 5", got, next)
	}
	recs, next, err = readBatches(&protocol.RecordStream{Records: partitionLog()}, next, 5, newAbortFilter(true, abortedTxns))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(offsets(recs)); got != "[5 9 10]" || next != 11 {
		t.Fatalf("from 5: offsets %s, next %d; want [5 9 10], next 11", got, next)
	}
}

package ingest

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/emopipe/emopipe/internal/kafkatest"
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

// Every codec a producer may use reads back as written (keys, values,
// offsets) through the reader's own decoding, and the reader's lag is 0
// at the end (kfake here; the real broker's tests use lz4 and zstd).
func TestPartitionReaderReadsEveryCodec(t *testing.T) {
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			kc := DefaultKafkaConfig()
			kc.Brokers, kc.Topic = kafkatest.Fake(t, 1, "codec"), "codec"
			p, err := kc.NewProducer("codec", codec)
			if err != nil {
				t.Fatal(err)
			}
			var keys, values [][]byte
			for i := range 300 {
				keys = append(keys, fmt.Appendf(nil, "k%d", i))
				values = append(values, fmt.Appendf(nil, `{"id":"k%d","text":"%s"}`, i, strings.Repeat("word ", i)))
			}
			if err := p.Write(context.Background(), keys, values); err != nil {
				t.Fatal(err)
			}
			p.Close()
			r, err := kc.NewPartitionReader(0, kafka.FirstOffset, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var got []Record
			for len(got) < len(values) {
				recs, err := r.Fetch(context.Background(), 1000, 0, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) == 0 {
					t.Fatalf("%d of %d records read, then nothing", len(got), len(values))
				}
				got = append(got, recs...)
			}
			for i, rec := range got {
				if rec.Offset != int64(i) || rec.Partition != 0 || string(rec.Key) != string(keys[i]) || string(rec.Value) != string(values[i]) {
					t.Fatalf("record %d: offset %d partition %d key %q value %.40q", i, rec.Offset, rec.Partition, rec.Key, rec.Value)
				}
			}
			if lag := r.Lag(); lag != 0 {
				t.Fatalf("lag %d after reading everything", lag)
			}
		})
	}
}

// The reader's requests follow what the records decompress to: they grow
// on records that do not compress (up to the byte bound), and stay small
// on records that compress 250 times, whose responses would otherwise
// hold far more than the bound in memory while they are read.
func TestFetchRequestFollowsTheRecords(t *testing.T) {
	for _, c := range []struct {
		name     string
		value    func(i int) []byte
		min, max int64
	}{
		{"incompressible", func(i int) []byte { return incompressible(i, 50_000) }, 1 << 18, 1 << 20},
		{"compresses 250 times", func(int) []byte { return []byte(strings.Repeat("x", 50_000)) }, minRequest, 16 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			kc := DefaultKafkaConfig()
			kc.Brokers, kc.Topic = kafkatest.Fake(t, 1, "squeeze"), "squeeze"
			p, err := kc.NewProducer("squeeze", "lz4")
			if err != nil {
				t.Fatal(err)
			}
			const n = 200
			for i := range n { // a batch each
				if err := p.Write(context.Background(), nil, [][]byte{c.value(i)}); err != nil {
					t.Fatal(err)
				}
			}
			p.Close()
			const budget = 1 << 20
			r, err := kc.NewPartitionReader(0, kafka.FirstOffset, budget)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for read := 0; read < n; {
				recs, err := r.Fetch(context.Background(), 1000, budget, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) == 0 {
					t.Fatalf("%d of %d records read, then nothing", read, n)
				}
				read += len(recs)
			}
			if got := r.f.request.Load(); got < c.min || got > c.max {
				t.Fatalf("request %d bytes after %d records of 50 KB; want %d to %d", got, n, c.min, c.max)
			}
		})
	}
}

// incompressible is n bytes that lz4 cannot shrink.
func incompressible(seed, n int) []byte {
	b := make([]byte, n)
	x := uint64(seed)*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// batchEnd finds where a compacted batch ends, whatever its length and
// wherever the reader stands in it, in about 2 log2(n) fetches: over a
// log of batches [base, last], a fetch at q starts at the first batch
// whose last offset is at least q (as the broker answers).
func TestBatchEndFindsWhereACompactedBatchEnds(t *testing.T) {
	for _, last := range []int64{10, 11, 12, 17, 40, 100, 1000, 65_535} {
		log := [][2]int64{{0, 9}, {10, last}, {last + 1, last + 3}} // batch 1 is the compacted one
		for _, end := range []int64{last + 1, last + 4} {           // none after it, or one
			for _, pos := range []int64{10, 11, (10 + last) / 2, last} {
				if pos > last {
					continue
				}
				fetches := 0
				got, err := batchEnd(pos, end, func(q int64) (bool, error) {
					fetches++
					if q <= pos || q >= end {
						t.Fatalf("batch [10,%d], pos %d, end %d: fetch at %d, outside (pos, end)", last, pos, end, q)
					}
					for _, b := range log {
						if b[1] >= q {
							return b[0] != 10, nil
						}
					}
					return true, nil // nothing at q
				})
				if err != nil || got != last+1 {
					t.Fatalf("batch [10,%d], pos %d, end %d: %d, %v; want %d", last, pos, end, got, err, last+1)
				}
				if n := last + 1 - pos; fetches > 2*bits.Len64(uint64(n))+1 {
					t.Errorf("batch [10,%d], pos %d: %d fetches for %d offsets", last, pos, fetches, n)
				}
			}
		}
	}
	// A failed fetch is the caller's error, not an offset.
	if _, err := batchEnd(10, 100, func(int64) (bool, error) { return false, errors.New("broker down") }); err == nil {
		t.Fatal("a failed fetch gave an offset")
	}
}

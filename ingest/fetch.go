package ingest

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

// Isolation levels (KafkaConfig.Isolation), as Kafka's consumers name them.
const (
	// ReadCommitted reads records of committed transactions and records
	// written outside transactions, up to the partition's last stable
	// offset: an open transaction holds back the records after it until it
	// ends. The default.
	ReadCommitted = "read_committed"
	// ReadUncommitted reads every data record as soon as it is written,
	// those of aborted transactions too.
	ReadUncommitted = "read_uncommitted"
)

// fetcher reads one partition with Kafka's fetch API, through kafka-go's
// protocol package and transport, one response ahead of its consumer.
//
// emopipe does not use kafka-go's Reader for this: the Reader returns the
// control records that end a transaction (commit and abort markers) as
// messages, so every transaction added a record that is not the
// producer's (a malformed_json reject, or with --format text a document
// of six bytes), and it cannot leave out aborted transactions, because a
// message does not carry its batch's producer id (segmentio/kafka-go#1332).
// The fetch response carries both, and abortFilter applies them as the
// Java consumer does.
type fetcher struct {
	transport *kafka.Transport
	renew     func() *kafka.Transport // a transport with no metadata cached (see run)
	addr      net.Addr
	topic     string
	partition int
	isolation int8
	maxBytes  int          // bound on one response's record values (one record at least)
	request   atomic.Int64 // the bytes a fetch asks for (see resize)
	out       chan fetched
	cancel    context.CancelFunc
	done      chan struct{}
	end       atomic.Int64                                            // the readable end: high watermark, or last stable offset at read_committed
	hwm       atomic.Int64                                            // the high watermark
	pos       atomic.Int64                                            // the offset the next fetch asks for
	failing   atomic.Value                                            // failure: the last fetch's error, nil after a fetch that worked
	jumped    bool                                                    // pos moved to the log start (outOfRange): not read through
	offsets   func(ctx context.Context) (first, end int64, err error) // KafkaConfig.Offsets of the partition
}

// failure wraps a fetch error for fetcher.failing (an atomic.Value holds
// one concrete type).
type failure struct{ err error }

// fetched is one response's records and the offset after everything it
// held (records, transaction markers, aborted or compacted offsets), or
// the error of a failed fetch.
type fetched struct {
	recs    []Record
	through int64
	err     error
}

const (
	fetchMaxWait    = 250 * time.Millisecond
	fetchBackoffMin = 100 * time.Millisecond
	fetchBackoffMax = 2 * time.Second
	// minRequest is the smallest fetch request, in bytes; the broker
	// returns one batch at least. See fetcher.resize.
	minRequest = 1 << 10
	// errorEvery spaces the errors a failing partition reports: a broker
	// that is down fails every retry, and its consumer logs what it gets.
	errorEvery = 30 * time.Second
)

// run fetches until ctx ends, handing to out each response that brings
// records or moves the position past offsets without any. A failed fetch
// is retried with backoff; the first error of a run of them (and then one
// every errorEvery) is handed on too.
func (f *fetcher) run(ctx context.Context) {
	defer close(f.done)
	backoff := fetchBackoffMin
	var lastReport time.Time
	for ctx.Err() == nil {
		pos := f.pos.Load()
		recs, err := f.fetch(ctx)
		f.failing.Store(failure{err})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The transport routes a fetch to the leader its cached
			// metadata names, and refreshes that cache only every 0-6 s
			// (kafka-go's MetadataTTL): after a leader moved, fetches
			// went to the old one, "not leader", for up to 5 s. A new
			// transport asks for the metadata at the next fetch.
			if f.renew != nil {
				f.transport.CloseIdleConnections()
				f.transport = f.renew()
			}
			if time.Since(lastReport) >= errorEvery {
				lastReport = time.Now()
				if !f.send(ctx, fetched{err: err}) {
					return
				}
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, fetchBackoffMax)
			continue
		}
		backoff, lastReport = fetchBackoffMin, time.Time{}
		// A response of only markers, aborted or compacted offsets is
		// handed on too: the consumer's position moves past them. A jump
		// to the log start is not: those offsets were not read.
		through := f.pos.Load()
		if (len(recs) > 0 || through > pos && !f.jumped) && !f.send(ctx, fetched{recs: recs, through: through}) {
			return
		}
		f.jumped = false
	}
}

func (f *fetcher) send(ctx context.Context, r fetched) bool {
	select {
	case f.out <- r:
		return true
	case <-ctx.Done():
		return false
	}
}

// fetch sends one fetch request at pos and returns the records it brings,
// advancing pos past everything the response held (aborted records and
// transaction markers included).
func (f *fetcher) fetch(ctx context.Context) ([]Record, error) {
	pos := f.pos.Load()
	request := max(f.request.Load(), minRequest)
	p, err := f.roundTrip(ctx, pos, request, fetchMaxWait)
	if err != nil {
		if errors.Is(err, kafka.OffsetOutOfRange) {
			return nil, f.outOfRange(ctx, pos)
		}
		return nil, err
	}
	f.hwm.Store(p.HighWatermark)
	end := p.HighWatermark
	if f.isolation == int8(kafka.ReadCommitted) && p.LastStableOffset >= 0 {
		end = p.LastStableOffset
	}
	f.end.Store(end)
	if p.RecordSet.Records == nil {
		return nil, nil
	}
	recs, next, err := readBatches(p.RecordSet.Records, pos, f.maxBytes, newAbortFilter(f.isolation == int8(kafka.ReadCommitted), p.AbortedTransactions))
	if err != nil {
		return nil, fmt.Errorf("kafka: fetch %s/%d at offset %d: %w", f.topic, f.partition, pos, err)
	}
	if next == pos && end > pos {
		return nil, f.stepOver(ctx, pos, end, request, p.RecordSet.Records)
	}
	for i := range recs {
		recs[i].Partition = f.partition
	}
	f.pos.Store(next)
	f.resize(request, ValueBytes(recs))
	return recs, nil
}

// roundTrip sends one fetch request for the partition at pos, asking for
// request bytes, and returns the partition's part of the response; a
// partition error comes back as the kafka.Error.
func (f *fetcher) roundTrip(ctx context.Context, pos, request int64, wait time.Duration) (*fetchapi.ResponsePartition, error) {
	rctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	m, err := f.transport.RoundTrip(rctx, f.addr, &fetchapi.Request{
		ReplicaID: -1, MaxWaitTime: int32(wait / time.Millisecond), MinBytes: 1,
		MaxBytes: int32(request), IsolationLevel: f.isolation, SessionID: -1, SessionEpoch: -1,
		Topics: []fetchapi.RequestTopic{{Topic: f.topic, Partitions: []fetchapi.RequestPartition{{
			Partition: int32(f.partition), CurrentLeaderEpoch: -1, FetchOffset: pos,
			LogStartOffset: -1, PartitionMaxBytes: int32(request),
		}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("kafka: fetch %s/%d at offset %d: %w", f.topic, f.partition, pos, err)
	}
	res := m.(*fetchapi.Response)
	if res.ErrorCode != 0 {
		return nil, fmt.Errorf("kafka: fetch %s/%d at offset %d: %w", f.topic, f.partition, pos, kafka.Error(res.ErrorCode))
	}
	if len(res.Topics) != 1 || len(res.Topics[0].Partitions) != 1 {
		return nil, fmt.Errorf("kafka: fetch %s/%d at offset %d: the broker answered for no such partition", f.topic, f.partition, pos)
	}
	p := &res.Topics[0].Partitions[0]
	if p.ErrorCode != 0 {
		return nil, fmt.Errorf("kafka: fetch %s/%d at offset %d: %w", f.topic, f.partition, pos, kafka.Error(p.ErrorCode))
	}
	return p, nil
}

// stepOver moves the reader past a response none of whose batches has a
// record at or after pos. The broker answers from the batch that holds
// pos, so each of them reaches pos or beyond, but compaction took its
// records from pos on: Kafka keeps a compacted batch's last offset (for
// its producer's sequence numbers), and the next fetch at pos gets the
// same batch again. The Java consumer goes on at the batch's last offset
// + 1; kafka-go's batch type does not give it. So, first, a larger
// request, which brings the batches after it; when the request is at the
// bound and the next batch still does not fit (or none follows before the
// readable end), batchEnd finds where the batch ends.
func (f *fetcher) stepOver(ctx context.Context, pos, end, request int64, rr protocol.RecordReader) error {
	if request < int64(f.maxBytes) {
		f.request.Store(min(2*request, int64(f.maxBytes)))
		return nil
	}
	base, ok := firstBatchBase(rr)
	if !ok {
		return fmt.Errorf("kafka: fetch %s/%d at offset %d: no progress (the response has no record at or after the offset)", f.topic, f.partition, pos)
	}
	next, err := batchEnd(pos, end, func(q int64) (bool, error) {
		p, err := f.roundTrip(ctx, q, minRequest, 0)
		if errors.Is(err, kafka.OffsetOutOfRange) {
			return true, nil
		} else if err != nil {
			return false, err
		}
		b, ok := firstBatchBase(p.RecordSet.Records)
		return !ok || b != base, nil
	})
	if err != nil {
		return err
	}
	f.pos.Store(next)
	return nil
}

// batchEnd returns the offset after the last one of the batch that holds
// pos, given past(q): whether a fetch at q starts past that batch (false
// up to its last offset, true after it). It probes at doubling distances
// from pos, then halves the interval: about 2 log2(n) fetches for a batch
// n offsets past pos. The readable end counts as past.
func batchEnd(pos, end int64, past func(q int64) (bool, error)) (int64, error) {
	in, out := pos, min(pos+1, end) // the batch holds in; out is past it
	for out < end {
		p, err := past(out)
		if err != nil {
			return 0, err
		}
		if p {
			break
		}
		in, out = out, min(pos+2*(out-pos), end)
	}
	for out-in > 1 {
		mid := in + (out-in)/2
		p, err := past(mid)
		if err != nil {
			return 0, err
		}
		if p {
			out = mid
		} else {
			in = mid
		}
	}
	return out, nil
}

// firstBatchBase returns the base offset of a response's first batch.
func firstBatchBase(rr protocol.RecordReader) (int64, bool) {
	if s, ok := rr.(*protocol.RecordStream); ok {
		if len(s.Records) == 0 {
			return 0, false
		}
		rr = s.Records[0]
	}
	switch b := rr.(type) {
	case *protocol.RecordBatch:
		return b.BaseOffset, true
	case *protocol.ControlBatch:
		return b.BaseOffset, true
	}
	return 0, false
}

// resize sets the next request from the record values the last one
// brought. The broker bounds a response by its compressed bytes, and the
// transport decompresses the whole response as it reads it: asking for
// maxBytes, lz4-compressed text came back 2-2.5 times larger, readBatches
// kept maxBytes of it, and decompressing the rest again at the next fetch
// cost 30% more CPU on the data path (667 MB, 1.8 CPU-s); a topic of
// records that compress 250 times held 16 MB per response in memory for a
// request of 64 KB. So requests start small and double while a response
// brings under half of maxBytes and at least half of what was asked for
// (less means the partition is caught up), and halve after a response
// that reached maxBytes: a response stays under about maxBytes however
// well its records compress, and one that is cut is rare.
func (f *fetcher) resize(request int64, values int) {
	switch {
	case values >= f.maxBytes:
		f.request.Store(max(request/2, minRequest))
	case int64(values) >= request/2 && values < f.maxBytes/2:
		f.request.Store(min(request*2, int64(f.maxBytes)))
	default:
		f.request.Store(request)
	}
}

// outOfRange handles a fetch offset the partition does not hold: before
// its log start (retention deleted those records) the reader moves to the
// log start, as kafka-go's Reader does (the ingester notices the jump and
// records the deleted range); past its end, still so a second later, it
// is a TruncatedError.
func (f *fetcher) outOfRange(ctx context.Context, pos int64) error {
	for retry := true; ; retry = false {
		first, last, err := f.offsets(ctx)
		if err != nil {
			return fmt.Errorf("kafka: fetch %s/%d at offset %d: out of range, and the partition's offsets are unknown: %w", f.topic, f.partition, pos, err)
		}
		if pos < first {
			f.pos.Store(first)
			f.jumped = true
			return nil
		}
		if pos <= last {
			return nil // written since: fetch again
		}
		if !retry {
			return &TruncatedError{Topic: f.topic, Partition: f.partition, Pos: pos, End: last}
		}
		select { // a new leader's end may lag for a moment
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TruncatedError is a partition that ends before the reader's position:
// the topic was deleted and created again (its offsets start over), or
// an unclean leader election cut the log. Waiting was wrong either way:
// once the partition grew past the position again, the reader went on
// from there, and the records before it were never read.
type TruncatedError struct {
	Topic     string
	Partition int
	Pos, End  int64
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("kafka: %s/%d ends at offset %d, before offset %d where it was read to: the topic was deleted and created again, or an unclean leader election cut its log",
		e.Topic, e.Partition, e.End, e.Pos)
}

// readBatches returns the data records at or after pos of a fetch
// response's batches that keep passes, and the offset after the last
// record it went through (at least pos). It stops after the record that
// brings their values to maxBytes: the broker bounds a response by its
// compressed bytes, and 200 KB of lz4 held 3.6 MB of records in a test;
// the rest is fetched again (see fetcher.resize).
func readBatches(rr protocol.RecordReader, pos int64, maxBytes int, keep *abortFilter) ([]Record, int64, error) {
	batches := []protocol.RecordReader{rr}
	if s, ok := rr.(*protocol.RecordStream); ok {
		batches = s.Records
	}
	var out []Record
	next, size := pos, 0
	for _, b := range batches {
		if size >= maxBytes {
			break
		}
		if cb, ok := b.(*protocol.ControlBatch); ok {
			// A transaction's commit or abort marker: never a record for
			// the consumer, but its offset is read past.
			for {
				r, err := cb.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return nil, next, err
				}
				next = max(next, r.Offset+1)
				cr, err := protocol.ReadControlRecord(r)
				if err != nil {
					return nil, next, err
				}
				keep.marker(cb, cr.Type == controlAbort)
			}
			continue
		}
		take := keep.batch(b)
		for size < maxBytes {
			r, err := b.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, next, err
			}
			if r.Offset < pos {
				closeRecord(r)
				continue
			}
			next = max(next, r.Offset+1)
			if !take {
				closeRecord(r)
				continue
			}
			rec, err := copyRecord(r)
			if err != nil {
				return nil, next, err
			}
			out = append(out, rec)
			size += len(rec.Value)
		}
	}
	return out, next, nil
}

// ValueBytes is the size of the records' values.
func ValueBytes(recs []Record) int {
	n := 0
	for _, r := range recs {
		n += len(r.Value)
	}
	return n
}

func closeRecord(r *protocol.Record) {
	if r.Key != nil {
		r.Key.Close()
	}
	if r.Value != nil {
		r.Value.Close()
	}
}

// copyRecord copies a record out of the response's pages.
func copyRecord(r *protocol.Record) (Record, error) {
	defer closeRecord(r)
	key, err := protocol.ReadAll(r.Key)
	if err != nil {
		return Record{}, err
	}
	value, err := protocol.ReadAll(r.Value)
	if err != nil {
		return Record{}, err
	}
	rec := Record{Offset: r.Offset, Key: key, Value: value, Time: r.Time}
	if len(r.Headers) > 0 {
		rec.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			rec.Headers[h.Key] = string(h.Value)
		}
	}
	return rec, nil
}

// abortFilter decides, batch by batch in offset order, which batches of a
// fetch response hold records for the consumer. Control batches (the
// markers that end transactions) never do. At read_committed, neither do
// the batches of an aborted transaction: the response lists each aborted
// transaction as its producer id and first offset; from that offset the
// producer's transactional batches are aborted, up to its abort marker.
// This is the Java consumer's rule (CompletedFetch.nextFetchedRecord),
// with a batch's base offset where Java takes its last: a transaction's
// first offset is the base offset of its producer's first batch in it.
type abortFilter struct {
	committed bool
	pending   abortedHeap        // listed, not yet reached
	aborted   map[int64]struct{} // producers whose current transaction is aborted
}

func newAbortFilter(committed bool, txns []fetchapi.ResponseTransaction) *abortFilter {
	f := &abortFilter{committed: committed, aborted: map[int64]struct{}{}}
	if committed {
		f.pending = append(abortedHeap(nil), txns...)
		heap.Init(&f.pending)
	}
	return f
}

// controlAbort is the type of an abort marker's control record (a commit
// marker's is 1).
const controlAbort = 0

// batch reports whether the data batch b's records are for the consumer.
func (f *abortFilter) batch(b protocol.RecordReader) bool {
	rb, ok := b.(*protocol.RecordBatch)
	if !ok || !f.committed || !rb.Attributes.Transactional() {
		return true // a v0/v1 message set has no transactions
	}
	f.reach(rb.BaseOffset)
	_, aborted := f.aborted[rb.ProducerID]
	return !aborted
}

// marker takes a transaction marker into account: an abort marker ends
// its producer's aborted transaction.
func (f *abortFilter) marker(b *protocol.ControlBatch, abort bool) {
	if !f.committed {
		return
	}
	f.reach(b.BaseOffset)
	if abort {
		delete(f.aborted, b.ProducerID)
	}
}

// reach moves the aborted transactions that start at or before offset
// into the aborted producers.
func (f *abortFilter) reach(offset int64) {
	for len(f.pending) > 0 && f.pending[0].FirstOffset <= offset {
		t := heap.Pop(&f.pending).(fetchapi.ResponseTransaction)
		f.aborted[t.ProducerID] = struct{}{}
	}
}

type abortedHeap []fetchapi.ResponseTransaction

func (h abortedHeap) Len() int           { return len(h) }
func (h abortedHeap) Less(i, j int) bool { return h[i].FirstOffset < h[j].FirstOffset }
func (h abortedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *abortedHeap) Push(x any)        { *h = append(*h, x.(fetchapi.ResponseTransaction)) }
func (h *abortedHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

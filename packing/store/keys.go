package store

import "encoding/binary"

// Key layout. One-letter prefixes keep keys short; the dense sequence number
// is big-endian so that key order is sequence order.
const (
	keyHeader = "h"
	keyStats  = "m/stats"
	keyNext   = "m/next" // next sequence number, 8 bytes big-endian
	prefSeq   = "s/"     // + seqno → packing.Sequence binary
	prefDoc   = "d/"     // + doc key → DocRecord JSON
	prefSrc   = "o/"     // + source name → opaque resume state
	prefRej   = "r/"     // + reject number → Reject JSON
	keyRejN   = "m/rejects"
	prefState = "t/" // + name → trainer state (opaque)
	prefStage = "x/" // + source name → a staged batch awaiting its commit point (or a chunkMarker)
	prefChunk = "c/" // + source name + "/" + end (8 bytes) → a staged batch (format 2), kept once final
)

// chunkKey names the stored value of source's batch that ends at end.
func chunkKey(source string, end int64) []byte {
	k := append([]byte(prefChunk), source...)
	return binary.BigEndian.AppendUint64(append(k, '/'), uint64(end))
}

func seqKey(n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefSeq), n)
}

func rejKey(n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefRej), n)
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func be64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

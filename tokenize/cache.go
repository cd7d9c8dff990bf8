package tokenize

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// pieceCache maps pretokens to their ids for one encoder. Lookups are most of the
// encoding work once text is warm (pretokens average ~4 bytes), so this is a small
// open-addressing table with a word-at-a-time hash instead of a Go map. A slot is 8
// bytes (hash tag, entry offset) and an entry keeps key and ids together in one
// arena, so a hit touches two cache lines. The table grows up to cacheMaxSlots and is
// then dropped wholesale, which is cheaper than LRU bookkeeping on every hit and keeps
// memory bounded (at most 2 MB of slots and 8 MB of arena per encoder; typically
// ~2.5 MB of arena).
type pieceCache struct {
	slots []uint64 // tag<<32 | entry offset; 0 marks an empty slot
	shift uint8
	n     int
	// entries: key length byte, id count byte, key bytes, ids (uint32 little endian)
	arena []byte
}

const (
	cacheMinSlots = 1 << 12
	cacheMaxSlots = 1 << 18
	cacheMaxArena = 8 << 20 // bytes; bounds memory when pieces are long
	cacheMaxPiece = 255     // key length fits the entry's length byte; longer pieces are re-merged
	cacheMaxIDs   = 255
)

func (c *pieceCache) init(slots int) {
	c.slots = make([]uint64, slots)
	c.shift = uint8(64 - bits.TrailingZeros(uint(slots)))
	c.n = 0
}

// hashPiece mixes the key a word at a time; short keys use overlapping loads.
func hashPiece(s string) uint64 {
	const m1, m2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	n := len(b)
	h := uint64(n) * m1
	var v uint64
	switch {
	case n >= 8:
		for len(b) > 8 {
			h = (h ^ binary.LittleEndian.Uint64(b)) * m1
			h ^= h >> 32
			b = b[8:]
		}
		v = binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[n-8:]), 8))
	case n >= 4:
		v = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint32(b[n-4:]))<<32
	case n > 0:
		v = uint64(b[0])<<16 | uint64(b[n>>1])<<8 | uint64(b[n-1])
	}
	h = (h ^ v) * m2
	h ^= h >> 31
	h *= m1
	return h ^ h>>29
}

// get appends the cached ids of p to dst.
func (c *pieceCache) get(dst []uint32, p string) ([]uint32, bool) {
	if c.slots == nil {
		return dst, false
	}
	h := hashPiece(p)
	tag := uint64(uint32(h>>32) | 1)
	mask := len(c.slots) - 1
	for i := int(h >> c.shift); ; i = (i + 1) & mask {
		s := c.slots[i]
		if s == 0 {
			return dst, false
		}
		if s>>32 != tag {
			continue
		}
		off := int(uint32(s))
		e := c.arena[off:]
		if int(e[0]) != len(p) || string(e[2:2+len(p)]) != p {
			continue
		}
		ids := e[2+len(p) : 2+len(p)+4*int(e[1])]
		for len(ids) >= 4 {
			dst = append(dst, binary.LittleEndian.Uint32(ids))
			ids = ids[4:]
		}
		return dst, true
	}
}

// put adds p (not present, len(p) <= cacheMaxPiece) with its ids.
func (c *pieceCache) put(p string, ids []uint32) {
	if len(ids) > cacheMaxIDs {
		return
	}
	if c.slots == nil {
		c.init(cacheMinSlots)
	}
	need := 2 + len(p) + 4*len(ids)
	if 4*(c.n+1) > 3*len(c.slots) || len(c.arena)+need > cacheMaxArena { // load factor under 3/4
		if len(c.slots) >= cacheMaxSlots || len(c.arena)+need > cacheMaxArena {
			c.arena = c.arena[:0]
			clear(c.slots)
			c.n = 0
		} else {
			c.rehash(2 * len(c.slots))
		}
	}
	off := len(c.arena)
	c.arena = append(c.arena, byte(len(p)), byte(len(ids)))
	c.arena = append(c.arena, p...)
	for _, id := range ids {
		c.arena = binary.LittleEndian.AppendUint32(c.arena, id)
	}
	c.insert(hashPiece(p), uint32(off))
}

func (c *pieceCache) insert(h uint64, off uint32) {
	mask := len(c.slots) - 1
	for i := int(h >> c.shift); ; i = (i + 1) & mask {
		if c.slots[i] == 0 {
			c.slots[i] = uint64(uint32(h>>32)|1)<<32 | uint64(off)
			c.n++
			return
		}
	}
}

func (c *pieceCache) rehash(size int) {
	old := c.slots
	c.init(size)
	for _, s := range old {
		if s != 0 {
			off := int(uint32(s))
			k := c.arena[off+2 : off+2+int(c.arena[off])]
			c.insert(hashPiece(unsafe.String(unsafe.SliceData(k), len(k))), uint32(off))
		}
	}
}

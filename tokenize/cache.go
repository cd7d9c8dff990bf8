package tokenize

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// pieceCache maps pretokens to their ids for one encoder. Lookups are most of the
// encoding work once text is warm (pretokens average ~4 bytes), so this is a small
// open-addressing table instead of a Go map.
//
// A slot is 16 bytes and holds the common entry whole: a pretoken of at most 8 bytes
// is its own key (its bytes in one word, its length beside), and when it is one
// token, as in 80% of lookups on the real corpus, the id sits in the slot too, so a
// hit reads one cache line. Lookups miss the CPU's caches often (162k distinct
// pretokens in the 22 MB corpus, the most frequent 15k making 90% of lookups), and
// the earlier 8-byte slot pointing into the arena read two lines a hit: this layout
// tokenizes 15-25% faster (docs/benchmarks.md, "Thirteenth session"). Other entries
// keep their ids, and pretokens over 8 bytes their bytes, in an arena, the slot
// keying them by a 64-bit hash.
//
// The table grows up to cacheMaxSlots and is then dropped wholesale, which is cheaper
// than LRU bookkeeping on every hit and keeps memory bounded (at most 4 MB of slots
// and 8 MB of arena per encoder; 4 MB and 2 MB after the 22 MB corpus).
//
// In front of the table sits a small direct-mapped copy of the inline entries last
// hit (front, 256 KB): a hot piece's slot shares its cache line with three other hot
// pieces there instead of three cold ones, so the hot set stays in the core's own L2
// (512 KB a core here) rather than in the L3 it shares. On the corpus it answers 78% of
// lookups (81% are inline entries at all) and tokenizing is 4-5% faster
// (docs/benchmarks.md, "Fifteenth session"). Entries are copies and a piece's ids
// never change, so the front needs no invalidation when the table is dropped.
type pieceCache struct {
	front []cacheSlot
	slots []cacheSlot
	shift uint8
	n     int
	arena []byte
}

// cacheSlot is one entry; meta == 0 marks an empty slot (a pretoken is never empty).
type cacheSlot struct {
	key  uint64 // pretokens ≤ 8 bytes: their bytes, zero-padded; longer ones: hashPiece
	meta uint64 // id (inline) or arena offset | length<<32 | id count<<40 | slotInline
}

const slotInline = 1 << 48

const (
	cacheMinSlots   = 1 << 12
	cacheMaxSlots   = 1 << 18
	cacheMaxArena   = 8 << 20 // bytes; bounds memory when pieces are long
	cacheMaxPiece   = 255     // key length fits the slot's length byte; longer pieces are re-merged
	cacheMaxIDs     = 255
	cacheShortKey   = 8       // bytes a slot's key holds whole
	cacheFrontSlots = 1 << 14 // 256 KB; 2^12..2^15 measured, 2^14 fastest
)

func (c *pieceCache) init(slots int) {
	c.slots = make([]cacheSlot, slots)
	c.shift = uint8(64 - bits.TrailingZeros(uint(slots)))
	c.n = 0
}

// shortKey is s (≤ 8 bytes) as a little-endian word, zero-padded; with the length it
// identifies s. Overlapping loads write the shared bytes twice with the same value.
func shortKey(s string) uint64 {
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	switch n := len(b); {
	case n >= 4:
		return uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint32(b[n-4:]))<<(8*(n-4))
	case n >= 2:
		return uint64(binary.LittleEndian.Uint16(b)) | uint64(b[n-1])<<(8*(n-1))
	case n == 1:
		return uint64(b[0])
	}
	return 0
}

// cacheKey returns p's slot key and the hash that places it.
func cacheKey(p string) (key, h uint64) {
	if len(p) > cacheShortKey {
		h = hashPiece(p)
		return h, h
	}
	key = shortKey(p)
	return key, mixShort(key, len(p))
}

// mixShort hashes a short key and its length; the table indexes by the top bits.
func mixShort(key uint64, n int) uint64 {
	h := (key + uint64(n)) * 0x9E3779B97F4A7C15
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	return h ^ h>>32
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
	key, h := cacheKey(p)
	f := c.frontSlot(h)
	if f.holds(key, len(p)) {
		return append(dst, uint32(f.meta)), true
	}
	mask := len(c.slots) - 1
	for i := int(h >> c.shift); ; i = (i + 1) & mask {
		s := &c.slots[i]
		if s.meta == 0 {
			return dst, false
		}
		if !s.holds(key, len(p)) {
			continue
		}
		if s.meta&slotInline != 0 {
			*f = *s
			return append(dst, uint32(s.meta)), true
		}
		e := c.arena[uint32(s.meta):]
		if len(p) > cacheShortKey {
			if string(e[:len(p)]) != p {
				continue
			}
			e = e[len(p):]
		}
		for ids := e[:4*int(uint8(s.meta>>40))]; len(ids) >= 4; ids = ids[4:] {
			dst = append(dst, binary.LittleEndian.Uint32(ids))
		}
		return dst, true
	}
}

// frontSlot is the front's slot for a piece of hash h: the front is indexed by
// the hash's low bits, the table by its high ones.
func (c *pieceCache) frontSlot(h uint64) *cacheSlot {
	return &c.front[int(h)&(cacheFrontSlots-1)]
}

// holds says whether slot s is keyed for the piece of this key and length
// (an empty slot has length 0 and a piece never does). A long piece's key is
// its hash, so a table entry still needs its bytes compared; the front holds
// inline entries only, so there a match is the entry.
func (s *cacheSlot) holds(key uint64, n int) bool {
	return s.key == key && int(uint8(s.meta>>32)) == n
}

// put adds p (not present, 0 < len(p) <= cacheMaxPiece) with its ids.
func (c *pieceCache) put(p string, ids []uint32) {
	if len(ids) == 0 || len(ids) > cacheMaxIDs || len(p) == 0 || len(p) > cacheMaxPiece {
		return
	}
	if c.slots == nil {
		c.init(cacheMinSlots)
		c.front = make([]cacheSlot, cacheFrontSlots)
	}
	inline := len(p) <= cacheShortKey && len(ids) == 1
	need := 0
	if !inline {
		need = 4 * len(ids)
		if len(p) > cacheShortKey {
			need += len(p)
		}
	}
	if 4*(c.n+1) > 3*len(c.slots) || len(c.arena)+need > cacheMaxArena { // load factor under 3/4
		if len(c.slots) >= cacheMaxSlots || len(c.arena)+need > cacheMaxArena {
			c.arena = c.arena[:0]
			clear(c.slots)
			c.n = 0
		} else {
			c.rehash(2 * len(c.slots))
		}
	}
	key, h := cacheKey(p)
	meta := uint64(len(p))<<32 | uint64(len(ids))<<40
	if inline {
		meta |= slotInline | uint64(ids[0])
	} else {
		meta |= uint64(len(c.arena))
		if len(p) > cacheShortKey {
			c.arena = append(c.arena, p...)
		}
		for _, id := range ids {
			c.arena = binary.LittleEndian.AppendUint32(c.arena, id)
		}
	}
	c.insert(h, cacheSlot{key, meta})
}

func (c *pieceCache) insert(h uint64, s cacheSlot) {
	mask := len(c.slots) - 1
	for i := int(h >> c.shift); ; i = (i + 1) & mask {
		if c.slots[i].meta == 0 {
			c.slots[i] = s
			c.n++
			return
		}
	}
}

// rehash moves the entries to a table of size slots; keys give their hashes back
// without reading the arena.
func (c *pieceCache) rehash(size int) {
	old := c.slots
	c.init(size)
	for _, s := range old {
		if s.meta == 0 {
			continue
		}
		h := s.key
		if n := int(uint8(s.meta >> 32)); n <= cacheShortKey {
			h = mixShort(s.key, n)
		}
		c.insert(h, s)
	}
}

package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/ledger/smt"
)

// The serial map's top levels, the tiles above mapCacheDepth (at most
// 1 + 16 + 256 + 4,096 + 65,536 of them), are written behind. Every
// update's path passes through them, so writing them with each batch, as
// the tiles below are, cost a node three tile writes a record at a million
// serials (BenchmarkMapCost). Instead a ledger keeps them in memory
// (mapCache, every tile of them), and its store holds:
//
//   - a journal: 'J' and uint64be(log size after the batch) for every batch
//     that changed the map, in the batch's own transaction: its updates,
//     each key (32) || value (32);
//   - a snapshot of them, in one of two generations: 'M', the generation
//     (0 or 1) and uint32be(chunk) for chunks of at most mapChunkBytes,
//     each a run of (the tile's depth (1), its prefix bytes,
//     uint16be(length), the tile); and meta "maptop" = uint64be(the log
//     size it is of) || the generation.
//
// A snapshot is written in the generation the mark does not name (after
// deleting what a snapshot cut short left there), in as many transactions
// as it needs; then the mark names it, and the other generation and the
// journal up to its size are deleted. A crash at any point leaves the mark
// on a whole snapshot. The chunks go to badger's value log, a few keys in
// its LSM tree; the value log's garbage collection, run after a snapshot,
// reclaims the generations deleted.
//
// Open recovers the top levels from the snapshot and the journal after it
// (smt.Rebuild recomputes the updated keys' paths from the tiles below,
// which are always the latest) and checks the root it gets is the root the
// store records. A snapshot is written when the journal has grown to twice
// the tiles the cache holds (at least mapSnapshotMin updates), and at
// Close; so the snapshot costs about half a tile write an update, and a
// recovery recomputes at most that many paths.
const (
	mapSnapshotMin = 16 << 10
	mapChunkBytes  = 1 << 20 // within a transaction of an in-memory store
)

func journalKey(size uint64) []byte { return u64('J', size) }

func snapshotPrefix(gen byte) []byte { return []byte{'M', gen} }

func chunkKey(gen byte, i uint32) []byte { return binary.BigEndian.AppendUint32(snapshotPrefix(gen), i) }

func marshalJournal(us []smt.Update) []byte {
	b := make([]byte, 0, len(us)*2*smt.HashSize)
	for _, u := range us {
		b = append(append(b, u.Key[:]...), u.Value[:]...)
	}
	return b
}

// readJournal adds the updates journaled at log size first and after to
// set, the later batch's value of a key over the earlier's, and returns how
// many it read.
func readJournal(txn *badger.Txn, first uint64, set map[smt.Hash]smt.Hash) (int, error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte{'J'}
	it := txn.NewIterator(opts)
	defer it.Close()
	n := 0
	for it.Seek(journalKey(first)); it.Valid(); it.Next() {
		err := it.Item().Value(func(v []byte) error {
			if len(v)%(2*smt.HashSize) != 0 {
				return fmt.Errorf("%w: the serial map's journal at log size %d is %d bytes", ErrCorrupt, binary.BigEndian.Uint64(it.Item().Key()[1:]), len(v))
			}
			for ; len(v) > 0; v = v[2*smt.HashSize:] {
				set[smt.Hash(v[:smt.HashSize])] = smt.Hash(v[smt.HashSize : 2*smt.HashSize])
				n++
			}
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// parseTopMark reads the snapshot's mark.
func parseTopMark(b []byte) (size uint64, gen byte, err error) {
	if len(b) != 9 || b[8] > 1 {
		return 0, 0, fmt.Errorf("%w: the serial map's snapshot mark is %d bytes (%x)", ErrCorrupt, len(b), b)
	}
	return binary.BigEndian.Uint64(b), b[8], nil
}

// marshalTop encodes the cache's tiles in chunks.
func marshalTop(cache mapCache) [][]byte {
	var chunks [][]byte
	var cur []byte
	for k, t := range cache {
		b := t.marshal()
		if len(cur) > 0 && len(cur)+len(b)+40 > mapChunkBytes {
			chunks, cur = append(chunks, cur), nil
		}
		cur = append(cur, k.depth)
		cur = append(cur, k.prefix[:(int(k.depth)+7)/8]...)
		cur = binary.BigEndian.AppendUint16(cur, uint16(len(b)))
		cur = append(cur, b...)
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// readSnapshot reads generation gen's tiles into cache.
func readSnapshot(txn *badger.Txn, gen byte, cache mapCache) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = snapshotPrefix(gen)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := it.Item().Value(func(v []byte) error { return unmarshalChunk(v, cache) }); err != nil {
			return err
		}
	}
	return nil
}

// unmarshalChunk adds a chunk's tiles to cache.
func unmarshalChunk(b []byte, cache mapCache) error {
	for len(b) > 0 {
		depth := int(b[0])
		n := (depth + 7) / 8
		if depth >= mapCacheDepth || depth%tileLevels != 0 || len(b) < 1+n+2 {
			return fmt.Errorf("%w: the serial map's snapshot holds a tile at depth %d", ErrCorrupt, depth)
		}
		k := tileKey{depth: uint8(depth)}
		copy(k.prefix[:], b[1:1+n])
		if k.prefix != smt.At(k.prefix, depth).Prefix {
			return fmt.Errorf("%w: the serial map's snapshot holds a tile key with bits past its depth", ErrCorrupt)
		}
		size := int(binary.BigEndian.Uint16(b[1+n:]))
		b = b[1+n+2:]
		if len(b) < size {
			return fmt.Errorf("%w: the serial map's snapshot is cut short", ErrCorrupt)
		}
		t, err := unmarshalTile(b[:size])
		if err != nil {
			return fmt.Errorf("the serial map's snapshot, the tile at depth %d, prefix %x: %w", depth, k.prefix[:n], err)
		}
		if _, dup := cache[k]; dup || t.empty() {
			return fmt.Errorf("%w: the serial map's snapshot holds a tile twice, or an empty one", ErrCorrupt)
		}
		cache[k], b = t, b[size:]
	}
	return nil
}

// cacheStore is the top levels in cache as an smt.Store, for Rebuild: it
// changes tiles in place, so the cache must have no other reader.
type cacheStore struct{ cache mapCache }

func (m cacheStore) Get(p smt.Position) (*smt.Node, error) {
	key, slot := tileOf(p)
	if t := m.cache[key]; t != nil {
		return t[slot], nil
	}
	return nil, nil
}

func (m cacheStore) Put(p smt.Position, n *smt.Node) error {
	key, slot := tileOf(p)
	t := m.cache[key]
	if t == nil {
		if n == nil {
			return nil
		}
		t = new(tile)
		m.cache[key] = t
	}
	t[slot] = n
	if t.empty() {
		delete(m.cache, key)
	}
	return nil
}

// loadMap recovers the serial map's top levels (above): from the snapshot,
// or for a store written before they were written behind, from their tiles;
// then the journal after it. It checks the recovered map's root is the one
// the store records, and gives the cache to the ledger.
func (l *Ledger) loadMap() error {
	cache := make(mapCache)
	var journaled int
	var at uint64
	err := l.db.View(func(txn *badger.Txn) error {
		rb, err := getValue(txn, metaKey("map"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil // no map
		}
		if err != nil || len(rb) != smt.HashSize {
			return fmt.Errorf("%w: the serial map's root: %v", ErrCorrupt, err)
		}
		first, from := uint64(0), "no snapshot"
		mark, err := getValue(txn, metaKey("maptop"))
		switch {
		case err == nil:
			var gen byte
			if at, gen, err = parseTopMark(mark); err != nil {
				return err
			}
			if err := readSnapshot(txn, gen, cache); err != nil {
				return err
			}
			first, from = at+1, fmt.Sprintf("the snapshot of log size %d", at)
		case errors.Is(err, badger.ErrKeyNotFound):
			// No snapshot yet: the top levels' own tiles, if the store
			// was written before they were written behind.
			opts := badger.DefaultIteratorOptions
			opts.Prefix = []byte{'n'}
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid() && int(it.Item().Key()[1]) < mapCacheDepth; it.Next() {
				k := it.Item().Key()
				key := tileKey{depth: k[1]}
				copy(key.prefix[:], k[2:])
				err := it.Item().Value(func(v []byte) error {
					t, err := unmarshalTile(v)
					cache[key] = t
					return err
				})
				if err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		default:
			return err
		}
		set := make(map[smt.Hash]smt.Hash)
		if journaled, err = readJournal(txn, first, set); err != nil {
			return err
		}
		us := make([]smt.Update, 0, len(set))
		for k, v := range set {
			us = append(us, smt.Update{Key: k, Value: v})
		}
		root, err := smt.Rebuild(cacheStore{cache}, txnMap{txn: txn}, mapCacheDepth, us)
		if err != nil {
			return &CorruptError{Index: -1, What: "serial map: its top levels do not rebuild from the snapshot and the journal: " + err.Error()}
		}
		if !bytes.Equal(root[:], rb) {
			return &CorruptError{Index: -1, What: fmt.Sprintf("serial map: its top levels, from %s and %d journaled updates, give root %x; the store records %x", from, journaled, root[:], rb)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	l.mapMu.Lock()
	l.mapCache, l.mapJournaled = cache, journaled
	l.mapMu.Unlock()
	return nil
}

// mapSnapshotDue reports whether the journal has grown enough for a
// snapshot of the top levels.
func (l *Ledger) mapSnapshotDue() bool {
	every := l.cfg.mapSnapshotEvery
	if every == 0 {
		every = max(mapSnapshotMin, 2*len(l.mapCache))
	}
	return l.mapJournaled >= every
}

// snapshotMap writes a snapshot of the top levels at the ledger's size
// (above: in the generation the mark does not name, then the mark), then
// deletes what it makes obsolete: the other generation, the journal up to
// its size, and the top levels' own tiles of a store from before they were
// written behind. The caller holds applyMu.
func (l *Ledger) snapshotMap() error {
	size := l.view.Load().size
	gen := byte(0)
	err := l.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, metaKey("maptop"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		_, old, err := parseTopMark(b)
		gen = 1 - old
		return err
	})
	if err != nil {
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	all := func([]byte) bool { return true }
	if err := l.deleteKeys(all, snapshotPrefix(gen)); err != nil { // a snapshot cut short
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	wb := l.db.NewWriteBatch()
	defer wb.Cancel()
	for i, c := range marshalTop(l.mapCache) {
		if err := wb.Set(chunkKey(gen, uint32(i)), c); err != nil {
			return fmt.Errorf("serial map snapshot: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	if err := l.db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaKey("maptop"), append(be64(size), gen))
	}); err != nil {
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	l.mapJournaled = 0
	// What the snapshot makes obsolete: Open no longer reads it.
	if err := l.deleteKeys(all, snapshotPrefix(1-gen)); err != nil {
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	if err := l.deleteKeys(func(k []byte) bool {
		switch k[0] {
		case 'J':
			return binary.BigEndian.Uint64(k[1:]) <= size
		case 'n':
			return int(k[1]) < mapCacheDepth
		}
		return false
	}, []byte{'J'}, []byte{'n'}); err != nil {
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	// The deleted generations' chunks are the value log's only garbage (the
	// entries are never deleted): one pass, which rewrites a file only when
	// half of it is garbage, and does nothing for an in-memory store.
	_ = l.db.RunValueLogGC(0.5)
	return nil
}

// deleteKeys deletes the keys under the prefixes that drop says, in
// transactions of at most 10,000 deletions, stopping at the first key of
// a prefix that drop refuses (keys are in order).
func (l *Ledger) deleteKeys(drop func([]byte) bool, prefixes ...[]byte) error {
	for _, prefix := range prefixes {
		for {
			var batch [][]byte
			err := l.db.View(func(txn *badger.Txn) error {
				opts := badger.DefaultIteratorOptions
				opts.Prefix, opts.PrefetchValues = prefix, false
				it := txn.NewIterator(opts)
				defer it.Close()
				for it.Rewind(); it.Valid() && len(batch) < 10_000 && drop(it.Item().Key()); it.Next() {
					batch = append(batch, it.Item().KeyCopy(nil))
				}
				return nil
			})
			if err != nil || len(batch) == 0 {
				return err
			}
			if err := l.db.Update(func(txn *badger.Txn) error {
				for _, k := range batch {
					if err := txn.Delete(k); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

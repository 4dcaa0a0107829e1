package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// The serial map's top levels, the tiles above mapCacheDepth (at most
// 1 + 16 + 256 + 4,096 + 65,536 of them), are written behind. Every
// update's path passes through them, so writing them with each batch, as
// the tiles below are, cost a node about three tile writes a record at a
// million serials (BenchmarkMapCost). Instead a ledger keeps them in
// memory (mapCache, every tile of them), and:
//
//   - each batch that changes the map journals its updates in its own
//     transaction: 'J' and uint64be(log size after the batch) → each key
//     (32) || value (32);
//   - now and then the top levels are written to a snapshot file beside
//     the store (mapSnapshotFile, replaced whole by a rename), and the
//     journal up to its size is deleted.
//
// The snapshot is a file, not badger keys: written as values it would
// leave the value log garbage that badger only reclaims once compactions
// count it (400 snapshots of a 200,000-serial store grew the value log to
// 3.2 GB), and written as keys small enough for the LSM tree it costs ten
// times as long and loads the compactions (2.1 s at a million serials,
// against 0.2 s as a file).
//
// Open recovers the top levels from the snapshot and the journal after it
// (smt.Rebuild recomputes only the updated keys' paths, from the tiles
// below, which are always the latest) and checks the root it gets against
// the one the store records. Without a snapshot that gives that root (none
// yet, one from another store or an older one, a backup restored), it
// rebuilds them from every serial's stored state, and refuses the store if
// that does not give the recorded root either. A snapshot is written when
// the journal has grown to twice the tiles the cache holds (at least
// mapSnapshotMin updates), and at Close: about half a tile write an update,
// and a replay of at most that many updates at start.
const mapSnapshotMin = 16 << 10

// mapSnapshotFile is the snapshot's name in the store's directory:
//
//	"gpuledger-map-top-v1\n" || uint64be(log size) || map root (32) ||
//	tiles: (depth (1), prefix bytes, uint16be(length), tile)... ||
//	SHA-256 of all before
const mapSnapshotFile = "serial-map-top"

const mapSnapshotMagic = "gpuledger-map-top-v1\n"

func journalKey(size uint64) []byte { return u64('J', size) }

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

// marshalTop encodes the cache's tiles as the snapshot file holds them,
// for log size size and map root root.
func marshalTop(cache mapCache, size uint64, root smt.Hash) []byte {
	b := make([]byte, 0, len(mapSnapshotMagic)+8+32+len(cache)*600+32)
	b = append(b, mapSnapshotMagic...)
	b = binary.BigEndian.AppendUint64(b, size)
	b = append(b, root[:]...)
	for k, t := range cache {
		tb := t.marshal()
		b = append(b, k.depth)
		b = append(b, k.prefix[:(int(k.depth)+7)/8]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(tb)))
		b = append(b, tb...)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// parseTop reads a snapshot file's contents into cache.
func parseTop(b []byte, cache mapCache) (size uint64, root smt.Hash, err error) {
	head := len(mapSnapshotMagic) + 8 + 32
	if len(b) < head+32 || string(b[:len(mapSnapshotMagic)]) != mapSnapshotMagic {
		return 0, root, errors.New("not a snapshot of the serial map's top levels")
	}
	if sum := sha256.Sum256(b[:len(b)-32]); !bytes.Equal(sum[:], b[len(b)-32:]) {
		return 0, root, errors.New("its checksum does not match")
	}
	size = binary.BigEndian.Uint64(b[len(mapSnapshotMagic):])
	copy(root[:], b[len(mapSnapshotMagic)+8:])
	return size, root, unmarshalTiles(b[head:len(b)-32], cache)
}

// unmarshalTiles adds the snapshot's tiles, (depth, prefix bytes,
// uint16be(length), tile) each, to cache.
func unmarshalTiles(b []byte, cache mapCache) error {
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
	return m.cache.node(key, slot), nil
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

// loadMap recovers the serial map's top levels (above) and gives them to
// the ledger: from the snapshot file and the journal after it, or from
// every serial's stored state (rebuilt). The root they give must be the
// one the store records.
func (l *Ledger) loadMap(reg *Registry) (rebuilt bool, err error) {
	var cache mapCache
	var journaled int
	err = l.db.View(func(txn *badger.Txn) error {
		rb, err := getValue(txn, metaKey("map"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil // no map
		}
		if err != nil || len(rb) != smt.HashSize {
			return fmt.Errorf("%w: the serial map's root: %v", ErrCorrupt, err)
		}
		want := smt.Hash(rb)
		var why string
		cache, journaled, why, err = l.mapFromSnapshot(txn, want)
		if err != nil {
			return err
		}
		if why == "" {
			return nil
		}
		if why != "no snapshot" {
			l.log.Warn("rebuilding the serial map's top levels from the serials' states", "snapshot", why)
		}
		cache, err = mapFromStates(txn, reg)
		if err != nil {
			return err
		}
		got, err := smt.Rebuild(cacheStore{cache}, txnMap{txn: txn}, mapCacheDepth, nil)
		if err != nil {
			return &CorruptError{Index: -1, What: "serial map: " + err.Error()}
		}
		if got != want {
			return &CorruptError{Index: -1, What: fmt.Sprintf("serial map: rebuilt from the serials' states and its tiles, its root is %x; the store records %x", got[:], want[:])}
		}
		rebuilt = true
		return nil
	})
	if err != nil {
		return false, err
	}
	if cache == nil {
		cache = make(mapCache)
	}
	l.mapMu.Lock()
	l.mapCache, l.mapJournaled = cache, journaled
	l.mapMu.Unlock()
	return rebuilt, nil
}

// mapFromSnapshot recovers the top levels from the snapshot file and the
// journal after it, checking they give the root want; why says why not
// ("" when they do).
func (l *Ledger) mapFromSnapshot(txn *badger.Txn, want smt.Hash) (cache mapCache, journaled int, why string, err error) {
	if l.cfg.InMemory {
		return nil, 0, "no snapshot", nil
	}
	b, err := os.ReadFile(filepath.Join(l.cfg.Dir, mapSnapshotFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, "no snapshot", nil
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("read the serial map's snapshot: %w", err)
	}
	cache = make(mapCache)
	size, root, err := parseTop(b, cache)
	if err != nil {
		return nil, 0, err.Error(), nil
	}
	if rb, err := getValue(txn, mapRootKey(size)); err != nil || !bytes.Equal(rb, root[:]) {
		return nil, 0, fmt.Sprintf("it is of log size %d, whose map root in this store is not its root %x", size, root[:]), nil
	}
	set := make(map[smt.Hash]smt.Hash)
	if journaled, err = readJournal(txn, size+1, set); err != nil {
		return nil, 0, "", err
	}
	us := make([]smt.Update, 0, len(set))
	for k, v := range set {
		us = append(us, smt.Update{Key: k, Value: v})
	}
	got, err := smt.Rebuild(cacheStore{cache}, txnMap{txn: txn}, mapCacheDepth, us)
	switch {
	case err != nil:
		return nil, 0, "it does not rebuild with the journal after it: " + err.Error(), nil
	case got != want:
		return nil, 0, fmt.Sprintf("with the %d journaled updates after its log size %d it gives root %x, not the store's", journaled, size, got[:]), nil
	}
	return cache, journaled, "", nil
}

// mapFromStates rebuilds the top levels from every serial's stored state
// and the registry's, and the tiles below them.
func mapFromStates(txn *badger.Txn, reg *Registry) (mapCache, error) {
	var us []smt.Update
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte{'s'}
	it := txn.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		err := it.Item().Value(func(v []byte) error {
			st := new(pb.SerialState)
			if err := proto.Unmarshal(v, st); err != nil {
				return fmt.Errorf("%w: serial %q: %v", ErrCorrupt, it.Item().Key()[1:], err)
			}
			us = append(us, smt.Update{Key: MapKey(string(it.Item().Key()[1:])), Value: SerialLeaf(st.GetHeadHash(), st.GetEventCount(), st.GetLastIndex(), sha256.Sum256(v))})
			return nil
		})
		if err != nil {
			it.Close()
			return nil, err
		}
	}
	it.Close()
	changes, err := registryChanges(txn)
	if err != nil {
		return nil, err
	}
	var last uint64
	ropts := badger.DefaultIteratorOptions
	ropts.Prefix, ropts.Reverse, ropts.PrefetchValues = []byte{'r'}, true, false
	rit := txn.NewIterator(ropts)
	if rit.Seek(u64('r', ^uint64(0))); rit.Valid() && changes > 0 {
		last = binary.BigEndian.Uint64(rit.Item().Key()[1:])
	}
	rit.Close()
	u, err := registryUpdate(reg, changes, last)
	if err != nil {
		return nil, err
	}
	cache := make(mapCache)
	if _, err := smt.Rebuild(cacheStore{cache}, txnMap{txn: txn}, mapCacheDepth, append(us, u)); err != nil {
		return nil, &CorruptError{Index: -1, What: "serial map: " + err.Error()}
	}
	return cache, nil
}

// mapSnapshotDue reports whether the journal has grown enough for a
// snapshot of the top levels.
func (l *Ledger) mapSnapshotDue() bool { return l.mapJournaled >= l.mapSnapshotEvery() }

// mapSnapshotEvery is the journal length that makes a snapshot due.
func (l *Ledger) mapSnapshotEvery() int {
	if l.cfg.mapSnapshotEvery > 0 {
		return l.cfg.mapSnapshotEvery
	}
	return max(mapSnapshotMin, 2*len(l.mapCache))
}

// snapshotMap writes the snapshot file of the top levels at the ledger's
// size (a new file, synced, renamed over the old, the directory synced),
// then deletes the journal up to that size, and the top levels' own tiles
// of a store from before they were written behind. The caller holds
// applyMu (or is opening the store).
func (l *Ledger) snapshotMap() error {
	if l.cfg.InMemory {
		l.mapJournaled = 0
		return nil
	}
	v := l.view.Load()
	b := marshalTop(l.mapCache, v.size, v.mapRoot)
	path := filepath.Join(l.cfg.Dir, mapSnapshotFile)
	if err := writeFileSynced(path, b); err != nil {
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	l.mapJournaled = 0
	if err := l.deleteKeys(func(k []byte) bool {
		switch k[0] {
		case 'J':
			return binary.BigEndian.Uint64(k[1:]) <= v.size
		case 'n':
			return int(k[1]) < mapCacheDepth
		}
		return false
	}, []byte{'J'}, []byte{'n'}); err != nil {
		return fmt.Errorf("serial map snapshot: %w", err)
	}
	return nil
}

// writeFileSynced replaces path with b durably: a temporary file (0600),
// synced, renamed over path, and the directory synced.
func writeFileSynced(path string, b []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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

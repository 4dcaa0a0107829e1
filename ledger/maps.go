package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// The serial map is a sparse Merkle tree (package smt) that Apply keeps in
// the same transaction as the log: one leaf per serial, keyed by MapKey,
// whose value commits to the serial's head entry hash, event count, head
// index and stored state; and one leaf for the registry, keyed by
// RegistryMapKey, committing to the number of registry changes, the index
// of the last and the registry's state. Its root after each batch is kept
// by log size, so that a checkpoint of any size names the map of that size.
//
// Keys: 'n', a tile's depth and prefix for the tiles of the tree's nodes
// (below mapCacheDepth only, in a ledger's store: the levels above are
// kept in memory and written behind, maptop.go); 'N' and uint64be(log
// size) for the root at that size.

// Domain separation of the map's keys and values.
const (
	mapSerialTag   = "gpuledger-map-serial-v1\x00"
	mapRegistryTag = "gpuledger-map-registry-v1"
	mapLeafTag     = "gpuledger-map-leaf-v1\x00"
	mapRegLeafTag  = "gpuledger-map-registry-leaf-v1\x00"
)

// MapKey is the map key of a serial: SHA-256 of a tag and the serial.
func MapKey(serial string) smt.Hash { return sha256.Sum256([]byte(mapSerialTag + serial)) }

// RegistryMapKey is the map key of the registry.
var RegistryMapKey = smt.Hash(sha256.Sum256([]byte(mapRegistryTag)))

// SerialLeaf is a serial's map value:
//
//	SHA-256("gpuledger-map-leaf-v1\x00" || head entry hash (32) ||
//	        uint64be(event count) || uint64be(head index) || state digest (32))
//
// where the state digest is the SHA-256 of the serial's stored state (its
// deterministic protobuf form, without output-only fields).
func SerialLeaf(head []byte, count, headIndex uint64, stateDigest [32]byte) smt.Hash {
	b := make([]byte, 0, len(mapLeafTag)+32+16+32)
	b = append(b, mapLeafTag...)
	b = append(b, head...)
	b = binary.BigEndian.AppendUint64(b, count)
	b = binary.BigEndian.AppendUint64(b, headIndex)
	b = append(b, stateDigest[:]...)
	return sha256.Sum256(b)
}

// RegistryLeaf is the registry's map value:
//
//	SHA-256("gpuledger-map-registry-leaf-v1\x00" || uint64be(changes) ||
//	        uint64be(index of the last change, 0 before any) || registry digest (32))
func RegistryLeaf(changes, lastIndex uint64, digest [32]byte) smt.Hash {
	b := make([]byte, 0, len(mapRegLeafTag)+16+32)
	b = append(b, mapRegLeafTag...)
	b = binary.BigEndian.AppendUint64(b, changes)
	b = binary.BigEndian.AppendUint64(b, lastIndex)
	b = append(b, digest[:]...)
	return sha256.Sum256(b)
}

// RegistryDigest is the SHA-256 of the registry's state: a Genesis message
// holding its participants (by id), nodes, policy and quorum, in
// deterministic protobuf form.
func RegistryDigest(r *Registry) ([32]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Genesis{
		Participants: r.Participants(), Nodes: r.Nodes(), Policy: r.Policy().Proto(), RegistryQuorum: uint32(r.Quorum()),
	})
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

func mapRootKey(size uint64) []byte { return u64('N', size) }

// The map's nodes are stored in tiles: the nodes of tileLevels levels below
// a depth that is a multiple of tileLevels, under one key ('n', the tile's
// depth, the prefix bytes that hold its bits), so that an update writes a
// key per tileLevels levels of its path, not one per node. A tile holds up
// to 2^tileLevels - 1 nodes: a 16-bit mask of the slots in use, then 65
// bytes a node (smt.Node.Marshal), slot i at local depth o and local bits b
// being 2^o - 1 + b.
const tileLevels = 4

type tile [1<<tileLevels - 1]*smt.Node

func (t *tile) empty() bool {
	for _, n := range t {
		if n != nil {
			return false
		}
	}
	return true
}

// A tile's slots form a heap: slot i's children are slots 2i+1 and 2i+2,
// and slots 0 to 6 have theirs in the tile. So an inner node in those slots
// is written as one byte, 0x02, and its children's hashes computed again
// when the tile is read: a full tile is about 540 bytes, not 980.
const tileInner = 7 // slots whose children are in the tile

func (t *tile) marshal() []byte {
	var mask uint16
	b := make([]byte, 2, 2+len(t)*65)
	for i, n := range t {
		if n == nil {
			continue
		}
		mask |= 1 << uint(i)
		if !n.Leaf && i < tileInner {
			b = append(b, 2)
		} else {
			b = append(b, n.Marshal()...)
		}
	}
	binary.BigEndian.PutUint16(b, mask)
	return b
}

func unmarshalTile(b []byte) (*tile, error) {
	t := new(tile)
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: a map tile of %d bytes", ErrCorrupt, len(b))
	}
	mask, rest := binary.BigEndian.Uint16(b), b[2:]
	var derive [tileInner]bool
	for i := range t {
		if mask&(1<<uint(i)) == 0 {
			continue
		}
		if len(rest) > 0 && rest[0] == 2 && i < tileInner {
			t[i], derive[i], rest = &smt.Node{}, true, rest[1:]
			continue
		}
		if len(rest) < 65 {
			return nil, fmt.Errorf("%w: a map tile is short", ErrCorrupt)
		}
		n, err := smt.UnmarshalNode(rest[:65])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		t[i], rest = n, rest[65:]
	}
	if len(rest) != 0 || mask>>uint(len(t)) != 0 {
		return nil, fmt.Errorf("%w: a map tile has bytes past its nodes", ErrCorrupt)
	}
	hash := func(n *smt.Node) smt.Hash {
		if n == nil {
			return smt.Empty
		}
		return n.Hash()
	}
	for i := tileInner - 1; i >= 0; i-- {
		if derive[i] {
			t[i].Left, t[i].Right = hash(t[2*i+1]), hash(t[2*i+2])
			if t[i].Left == smt.Empty && t[i].Right == smt.Empty {
				return nil, fmt.Errorf("%w: a map tile's inner node has no children", ErrCorrupt)
			}
		}
	}
	return t, nil
}

// A tileKey names a tile: its depth and the prefix of its root's position
// (bits past the depth zero). Kept as a value, not a string, so that the
// look-ups of an update allocate nothing; bytes is its badger key.
type tileKey struct {
	depth  uint8
	prefix smt.Hash
}

func (k tileKey) bytes() []byte {
	return append([]byte{'n', k.depth}, k.prefix[:(int(k.depth)+7)/8]...)
}

// tileOf returns the key of the tile that holds position p, and p's slot.
func tileOf(p smt.Position) (tileKey, int) {
	td := p.Depth / tileLevels * tileLevels
	o := p.Depth - td
	bits := 0
	for i := td; i < p.Depth; i++ {
		bits = bits<<1 | int((p.Prefix[i/8]>>(7-uint(i%8)))&1)
	}
	return tileKey{depth: uint8(td), prefix: smt.At(p.Prefix, td).Prefix}, 1<<uint(o) - 1 + bits
}

func readTile(txn *badger.Txn, key tileKey) (*tile, error) {
	b, err := getValue(txn, key.bytes())
	if errors.Is(err, badger.ErrKeyNotFound) {
		return new(tile), nil
	}
	if err != nil {
		return nil, err
	}
	return unmarshalTile(b)
}

// mapCacheDepth bounds the tiles kept in memory: those of the levels above
// it, which every update reads (at most 1 + 16 + 256 + 4,096 + 65,536
// tiles, about 70 MB when all are full).
const mapCacheDepth = 20

// mapCache holds the map's committed tiles above mapCacheDepth, by key.
// Its tiles are never changed in place: a batch copies the ones it writes
// and the cache takes the copies once the batch has committed.
type mapCache map[tileKey]*tile

// node is the node in slot of the cached tile key (nil: none).
func (c mapCache) node(key tileKey, slot int) *smt.Node {
	if t := c[key]; t != nil {
		return t[slot]
	}
	return nil
}

// batchMap is the map's store for one batch: tiles the batch has touched
// are kept until flush writes the changed ones to the transaction; tiles
// of the top levels come from the cache, which takes the batch's once the
// transaction commits (commit).
//
// behind is a ledger's: its cache holds every tile of the top levels (a
// tile it lacks is empty), and flush writes only the tiles below them,
// the top levels being written behind (maptop.go). Without behind (an
// audit store) the cache is filled as tiles are read, and flush writes
// every tile the batch changed.
type batchMap struct {
	txn    *badger.Txn
	cache  mapCache
	behind bool
	// prev is the batch before, when txn does not see what it wrote (an
	// audit store's commit, which writes the chunk before meanwhile): the
	// tiles it changed are read from it first.
	prev *batchMap
	// journal: updateMap journals the updates (a ledger's on disk).
	journal bool
	tiles   map[tileKey]*tile
	dirty   map[tileKey]bool
	// The tile touched last, and whether the batch has written it: an
	// update walks four levels of a tile in a row, down and then up.
	lastKey   tileKey
	last      *tile
	lastDirty bool
}

func newBatchMap(txn *badger.Txn, cache mapCache, behind bool) *batchMap {
	return &batchMap{txn: txn, cache: cache, behind: behind, tiles: make(map[tileKey]*tile), dirty: make(map[tileKey]bool)}
}

func cachedDepth(key tileKey) bool { return int(key.depth) < mapCacheDepth }

func (m *batchMap) tile(key tileKey) (*tile, error) {
	if t, ok := m.tiles[key]; ok {
		return t, nil
	}
	if m.prev != nil && m.prev.dirty[key] {
		t := m.prev.tiles[key] // not changed in place: Put copies it
		m.tiles[key] = t
		return t, nil
	}
	if cachedDepth(key) {
		if t, ok := m.cache[key]; ok {
			m.tiles[key] = t
			return t, nil
		}
		if m.behind {
			t := new(tile)
			m.tiles[key] = t
			return t, nil
		}
	}
	t, err := readTile(m.txn, key)
	if err != nil {
		return nil, err
	}
	if cachedDepth(key) && !t.empty() {
		m.cache[key] = t // as committed: the batch has not written it
	}
	m.tiles[key] = t
	return t, nil
}

func (m *batchMap) Get(p smt.Position) (*smt.Node, error) {
	key, slot := tileOf(p)
	if m.last != nil && key == m.lastKey {
		return m.last[slot], nil
	}
	t, err := m.tile(key)
	if err != nil {
		return nil, err
	}
	m.lastKey, m.last, m.lastDirty = key, t, m.dirty[key]
	return t[slot], nil
}

func (m *batchMap) Put(p smt.Position, n *smt.Node) error {
	key, slot := tileOf(p)
	if m.last != nil && key == m.lastKey && m.lastDirty {
		m.last[slot] = n
		return nil
	}
	t, err := m.tile(key)
	if err != nil {
		return err
	}
	if !m.dirty[key] {
		c := *t // copy on first write: the cache keeps the committed tile
		t = &c
		m.tiles[key], m.dirty[key] = t, true
	}
	m.lastKey, m.last, m.lastDirty = key, t, true
	t[slot] = n
	return nil
}

// flush writes the changed tiles to the transaction (behind: those below
// the top levels).
func (m *batchMap) flush() error {
	for key := range m.dirty {
		if m.behind && cachedDepth(key) {
			continue
		}
		t := m.tiles[key]
		var err error
		if t.empty() {
			err = m.txn.Delete(key.bytes())
		} else {
			err = m.txn.Set(key.bytes(), t.marshal())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commit gives the cache the batch's tiles of the top levels, once the
// transaction has committed.
func (m *batchMap) commit() {
	for key := range m.dirty {
		if !cachedDepth(key) {
			continue
		}
		if t := m.tiles[key]; t.empty() {
			delete(m.cache, key)
		} else {
			m.cache[key] = t
		}
	}
}

// txnMap reads the map's nodes from a transaction and, above
// mapCacheDepth, from cache when it is given (a ledger's, whose top levels
// are not in the store's tiles while they are written behind).
type txnMap struct {
	txn   *badger.Txn
	cache mapCache
}

func (m txnMap) Get(p smt.Position) (*smt.Node, error) {
	key, slot := tileOf(p)
	if m.cache != nil && cachedDepth(key) {
		return m.cache.node(key, slot), nil
	}
	t, err := readTile(m.txn, key)
	if err != nil {
		return nil, err
	}
	return t[slot], nil
}

func (m txnMap) Put(smt.Position, *smt.Node) error {
	return errors.New("serial map: read only")
}

// registryUpdate is the registry leaf's update for reg after changes
// changes, the last at lastIndex.
func registryUpdate(reg *Registry, changes, lastIndex uint64) (smt.Update, error) {
	d, err := RegistryDigest(reg)
	if err != nil {
		return smt.Update{}, err
	}
	return smt.Update{Key: RegistryMapKey, Value: RegistryLeaf(changes, lastIndex, d)}, nil
}

// updateMap applies updates to the map in txn, records its root for the
// log size and, when the store's top levels are written behind, journals
// the updates.
func updateMap(txn *badger.Txn, store *batchMap, size uint64, updates []smt.Update) (smt.Hash, error) {
	root, err := smt.Apply(store, updates)
	if err != nil {
		return root, fmt.Errorf("serial map: %w", err)
	}
	if err := store.flush(); err != nil {
		return root, err
	}
	if store.journal {
		if err := txn.Set(journalKey(size), marshalJournal(updates)); err != nil {
			return root, err
		}
	}
	if err := txn.Set(metaKey("map"), root[:]); err != nil {
		return root, err
	}
	return root, txn.Set(mapRootKey(size), root[:])
}

// MapRoot returns the map's root at a log size the ledger has held after a
// batch (or at 0), or ErrNotFound.
func (l *Ledger) MapRoot(size uint64) (smt.Hash, error) {
	var h smt.Hash
	err := l.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, mapRootKey(size))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("no map root at log size %d: %w", size, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if len(b) != smt.HashSize {
			return fmt.Errorf("%w: map root at size %d is %d bytes", ErrCorrupt, size, len(b))
		}
		copy(h[:], b)
		return nil
	})
	return h, err
}

// ErrNoMap means the store keeps no serial map: written before the map, or
// with NoSerialMap.
var ErrNoMap = errors.New("this store keeps no serial map (it was written before the map existed: start anew and import the histories again)")

// MapProof returns, from one snapshot of the store, the log size, the map
// root at that size, and key's value (nil: none) with its proof.
func (l *Ledger) MapProof(key smt.Hash) (size uint64, root smt.Hash, value *smt.Hash, proof *smt.Proof, err error) {
	p, err := l.mapProofs("", key)
	if err != nil {
		return 0, root, nil, nil, err
	}
	return p[0].Size, p[0].Root, p[0].Value, p[0].Proof, nil
}

// SerialMapProof is a serial's map leaf proved, read from one snapshot of
// the store with the serial's stored state (nil when it has none).
type SerialMapProof struct {
	Size  uint64
	Root  smt.Hash
	Value *smt.Hash
	Proof *smt.Proof
	State []byte // the serial's stored state, whose SHA-256 the leaf commits to
}

// ProveSerial proves serial's map leaf (or its absence).
func (l *Ledger) ProveSerial(serial string) (SerialMapProof, error) {
	p, err := l.mapProofs(serial, MapKey(serial))
	return p[0], err
}

// ProveSerialAndRegistry proves serial's map leaf and the registry's, from
// one snapshot (a passport's).
func (l *Ledger) ProveSerialAndRegistry(serial string) (SerialMapProof, SerialMapProof, error) {
	p, err := l.mapProofs(serial, MapKey(serial), RegistryMapKey)
	if err != nil {
		return SerialMapProof{}, SerialMapProof{}, err
	}
	return p[0], p[1], nil
}

// mapProofs proves each key from one snapshot; the first proof carries
// serial's stored state, when serial is given.
func (l *Ledger) mapProofs(serial string, keys ...smt.Hash) ([]SerialMapProof, error) {
	outs := make([]SerialMapProof, len(keys))
	// Under mapMu, the cache holds the top levels of the map the
	// transaction holds the rest of: no batch commits meanwhile.
	l.mapMu.RLock()
	defer l.mapMu.RUnlock()
	err := l.db.View(func(txn *badger.Txn) error {
		var out SerialMapProof
		if serial != "" {
			b, err := getValue(txn, serialKey(serial))
			switch {
			case err == nil:
				out.State = b
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
		}
		b, err := getValue(txn, metaKey("size"))
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if len(b) == 8 {
			out.Size = binary.BigEndian.Uint64(b)
		}
		rb, err := getValue(txn, metaKey("map"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNoMap
		}
		if err != nil {
			return err
		}
		copy(out.Root[:], rb)
		for i, key := range keys {
			o := out
			if i > 0 {
				o.State = nil
			}
			if o.Value, o.Proof, err = smt.Prove(txnMap{txn, l.mapCache}, key); err != nil {
				return err
			}
			outs[i] = o
		}
		return nil
	})
	return outs, err
}

// registryChanges is the number of registry changes before this batch.
func registryChanges(txn *badger.Txn) (uint64, error) {
	b, err := getValue(txn, metaKey("registry"))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil || len(b) != 8 {
		return 0, fmt.Errorf("%w: the registry change count: %v", ErrCorrupt, err)
	}
	return binary.BigEndian.Uint64(b), nil
}

// initMap starts the serial map of a new store: the registry of the
// genesis, no changes, at log size 0.
func initMap(txn *badger.Txn, reg *Registry) error {
	u, err := registryUpdate(reg, 0, 0)
	if err != nil {
		return err
	}
	_, err = updateMap(txn, newBatchMap(txn, make(mapCache), true), 0, []smt.Update{u})
	return err
}

// MapStats reports what the serial map holds: its leaves (the serials and
// the registry) and the bytes it keeps on disk, before badger's own
// overhead and compression: the keys and values of its tiles below the top
// levels and of the journal, and the top levels' snapshot file.
func (l *Ledger) MapStats(ctx context.Context) (leaves int, bytes int64, err error) {
	count := func(t *tile) {
		for _, n := range t {
			if n != nil && n.Leaf {
				leaves++
			}
		}
	}
	l.mapMu.RLock()
	defer l.mapMu.RUnlock()
	for _, t := range l.mapCache {
		count(t)
	}
	err = l.db.View(func(txn *badger.Txn) error {
		for _, prefix := range []byte{'n', 'J'} {
			opts := badger.DefaultIteratorOptions
			opts.Prefix = []byte{prefix}
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid(); it.Next() {
				if err := ctx.Err(); err != nil {
					it.Close()
					return err
				}
				k := it.Item().Key()
				if prefix == 'n' && int(k[1]) < mapCacheDepth {
					continue // a store's from before the top levels were written behind, no longer read
				}
				err := it.Item().Value(func(v []byte) error {
					if prefix == 'n' {
						t, err := unmarshalTile(v)
						if err != nil {
							return err
						}
						count(t)
					}
					bytes += int64(len(k) + len(v))
					return nil
				})
				if err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		}
		return nil
	})
	if fi, ferr := os.Stat(filepath.Join(l.cfg.Dir, mapSnapshotFile)); ferr == nil && !l.cfg.InMemory {
		bytes += fi.Size()
	}
	return leaves, bytes, err
}

// CheckMap checks the serial map as the store holds it: its tiles hold a
// tree Apply could have written (smt.Check: every inner node's child
// hashes are its children's, every leaf on its key's path), whose root is
// the map root recorded for the log's size. It reads every tile once (the
// top levels' from memory, as Open recovered them) and returns the root; a
// *CorruptError says what does not hold. Batches wait for it to end.
func (l *Ledger) CheckMap(ctx context.Context) (smt.Hash, error) {
	var root smt.Hash
	l.mapMu.RLock()
	defer l.mapMu.RUnlock()
	err := l.db.View(func(txn *badger.Txn) error {
		rb, err := getValue(txn, metaKey("map"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNoMap
		}
		if err != nil {
			return err
		}
		copy(root[:], rb)
		got, err := smt.Check(&pathTiles{txn: txn, cache: l.mapCache, ctx: ctx})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &CorruptError{Index: -1, What: "serial map: " + err.Error()}
		}
		if got != root {
			return &CorruptError{Index: -1, What: fmt.Sprintf("serial map: its tiles hash to root %x; the store records %x", got[:], root[:])}
		}
		if b, err := getValue(txn, metaKey("size")); err == nil && len(b) == 8 {
			size := binary.BigEndian.Uint64(b)
			if sb, err := getValue(txn, mapRootKey(size)); err != nil || !bytes.Equal(sb, root[:]) {
				return &CorruptError{Index: -1, What: fmt.Sprintf("serial map: the root recorded for log size %d is not the map's (%v)", size, err)}
			}
		}
		return nil
	})
	return root, err
}

// pathTiles reads the map's tiles for a depth-first walk (smt.Check),
// keeping one tile per tile depth: those on the walk's current path. The
// top levels' come from cache.
type pathTiles struct {
	txn   *badger.Txn
	cache mapCache
	ctx   context.Context
	keys  [smt.HashSize*8/tileLevels + 1]tileKey
	tiles [smt.HashSize*8/tileLevels + 1]*tile
}

func (m *pathTiles) Get(p smt.Position) (*smt.Node, error) {
	key, slot := tileOf(p)
	i := int(key.depth) / tileLevels
	if m.cache != nil && cachedDepth(key) {
		return m.cache.node(key, slot), nil
	}
	if m.tiles[i] == nil || m.keys[i] != key {
		if err := m.ctx.Err(); err != nil {
			return nil, err
		}
		t, err := readTile(m.txn, key)
		if err != nil {
			return nil, err
		}
		m.keys[i], m.tiles[i] = key, t
	}
	return m.tiles[i][slot], nil
}

func (m *pathTiles) Put(smt.Position, *smt.Node) error {
	return errors.New("serial map: read only")
}

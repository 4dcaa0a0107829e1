package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// An AuditStore is an auditor's own rebuild of a ledger's derived state,
// kept between runs of verify --all so that each run verifies only the
// entries appended since the last: every serial's state (as NextState
// computes it), the serial map over them (the same tiles and leaves as a
// node's, maps.go), the registry-change entries, and a mark saying up to
// which log size all of it holds, with the Merkle tree's right edge there.
//
// Keys (a database of its own, never a node's): 's' and the serial for
// its state, 'n' for the map's tiles, 'r' and uint64be(index) for a
// registry-change envelope, 'm' "audit" for the mark.
type AuditStore struct {
	db    *badger.DB
	cache mapCache
}

// AuditMark is how far an AuditStore has verified a log: its size and
// root, the map root it rebuilt at that size, the compact range of the
// Merkle tree's right edge (to go on hashing from there), and the registry
// changes seen (their number and the index of the last).
type AuditMark struct {
	Size       uint64
	Root       [32]byte
	MapRoot    smt.Hash
	Range      [][]byte
	Changes    uint64
	LastChange uint64
	Serials    uint64 // serials with a state
}

// OpenAuditStore opens (or creates) the auditor's store in dir; with dir
// "" it is kept in memory only.
func OpenAuditStore(dir string) (*AuditStore, error) {
	// Uncompressed: a commit after a full run of 26,000 serials took
	// 445-508 ms against 538-691 ms compressed, for 17 MB on disk instead
	// of 9 (the store is an auditor's, of a size its ledger bounds).
	o := badger.DefaultOptions(dir).WithLogger(nil).WithMetricsEnabled(false).WithDetectConflicts(false).
		WithNumVersionsToKeep(1).WithMemTableSize(32 << 20).WithValueLogFileSize(64 << 20).WithCompression(options.None)
	if dir == "" {
		o = o.WithInMemory(true).WithDir("").WithValueDir("")
	}
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("audit store %s: %w", dir, err)
	}
	return &AuditStore{db: db, cache: make(mapCache)}, nil
}

// Close closes the store.
func (s *AuditStore) Close() error { return s.db.Close() }

// Reset empties the store: the next run starts from entry 0.
func (s *AuditStore) Reset() error {
	s.cache = make(mapCache)
	return s.db.DropAll()
}

// Mark returns how far the store has verified, or nil when it holds
// nothing complete (new, reset, or a run that stopped while committing).
func (s *AuditStore) Mark() (*AuditMark, error) {
	var m *AuditMark
	err := s.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, metaKey("audit"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		m, err = unmarshalMark(b)
		return err
	})
	return m, err
}

func (m *AuditMark) marshal() []byte {
	b := binary.BigEndian.AppendUint64(nil, m.Size)
	b = append(b, m.Root[:]...)
	b = append(b, m.MapRoot[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Changes)
	b = binary.BigEndian.AppendUint64(b, m.LastChange)
	b = binary.BigEndian.AppendUint64(b, m.Serials)
	for _, h := range m.Range {
		b = append(b, h...)
	}
	return b
}

func unmarshalMark(b []byte) (*AuditMark, error) {
	const fixed = 8 + 32 + 32 + 24
	if len(b) < fixed || (len(b)-fixed)%32 != 0 {
		return nil, fmt.Errorf("%w: an audit mark of %d bytes", ErrCorrupt, len(b))
	}
	m := &AuditMark{Size: binary.BigEndian.Uint64(b)}
	copy(m.Root[:], b[8:])
	copy(m.MapRoot[:], b[40:])
	m.Changes, m.LastChange, m.Serials = binary.BigEndian.Uint64(b[72:]), binary.BigEndian.Uint64(b[80:]), binary.BigEndian.Uint64(b[88:])
	for r := b[fixed:]; len(r) > 0; r = r[32:] {
		m.Range = append(m.Range, r[:32:32])
	}
	return m, nil
}

// State returns a serial's state as the store holds it, or nil.
func (s *AuditStore) State(serial string) (*pb.SerialState, error) {
	var st *pb.SerialState
	err := s.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, serialKey(serial))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		st = new(pb.SerialState)
		return proto.Unmarshal(b, st)
	})
	return st, err
}

// RegistryChanges calls fn with every registry-change envelope the store
// holds, in log order.
func (s *AuditStore) RegistryChanges(fn func(index uint64, envelope []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{'r'}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 9 {
				return fmt.Errorf("%w: a registry key of %d bytes in the audit store", ErrCorrupt, len(k))
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := fn(binary.BigEndian.Uint64(k[1:]), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// AuditChange is a registry-change entry for AuditStore.Commit.
type AuditChange struct {
	Index    uint64
	Envelope []byte
}

// auditChunk bounds the serials written (states and map leaves) in one of
// Commit's transactions.
var auditChunk = 2000 // a variable for tests

// An encodedState is a serial's state as Commit writes it, with its map
// leaf.
type encodedState struct {
	serial string
	b      []byte
	leaf   smt.Update
	err    error
}

// encodeStates encodes the states of serials, auditChunk at a time in
// order, each chunk on GOMAXPROCS goroutines, and sends the chunks on the
// channel it returns (one chunk ahead of the reader), which it closes after
// the last, or when stop is closed.
func encodeStates(serials []string, states map[string]*pb.SerialState, stop <-chan struct{}) <-chan []encodedState {
	out := make(chan []encodedState, 1)
	go func() {
		defer close(out)
		opts := proto.MarshalOptions{Deterministic: true}
		for len(serials) > 0 {
			n := min(len(serials), auditChunk)
			chunk := make([]encodedState, n)
			var next atomic.Int64
			var wg sync.WaitGroup
			for range min(runtime.GOMAXPROCS(0), n) {
				wg.Go(func() {
					for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
						e := &chunk[i]
						e.serial = serials[i]
						st := states[e.serial]
						if e.b, e.err = opts.Marshal(st); e.err == nil {
							e.leaf = smt.Update{Key: MapKey(e.serial), Value: SerialLeaf(st.GetHeadHash(), st.GetEventCount(), st.GetLastIndex(), sha256.Sum256(e.b))}
						}
					}
				})
			}
			wg.Wait()
			select {
			case out <- chunk:
			case <-stop:
				return
			}
			serials = serials[n:]
		}
	}()
	return out
}

// Commit writes what a run verified up to mark.Size: the serial states it
// changed, the registry changes it saw and the registry as of mark.Size,
// updates the map with their leaves, and writes the mark with the map root
// the leaves give, which it returns. The mark is removed first and written
// last, so that a run stopped halfway leaves no mark (the next starts
// anew).
func (s *AuditStore) Commit(mark AuditMark, states map[string]*pb.SerialState, reg *Registry, changes []AuditChange) (smt.Hash, error) {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(metaKey("audit")) }); err != nil {
		return smt.Hash{}, err
	}
	serials := make([]string, 0, len(states))
	for k := range states {
		serials = append(serials, k)
	}
	u, err := registryUpdate(reg, mark.Changes, mark.LastChange)
	if err != nil {
		return smt.Hash{}, err
	}
	// The chunks' states are encoded (and their map leaves made) ahead, on
	// all cores, while this goroutine updates the map and writes the chunk
	// before: the encoding was half of a commit that, after a verify --all,
	// has the machine to itself.
	stop := make(chan struct{})
	defer close(stop) // a commit that fails stops the encoder
	encoded := encodeStates(serials, states, stop)
	// Each chunk's transaction commits (badger writes it) while the next
	// chunk's map update is computed. The next chunk's transaction is
	// opened before that commit (one opened after would wait for it), so
	// it does not see the tiles the chunk before wrote: its map takes them
	// from that chunk's batch (prev) first.
	var (
		root     smt.Hash
		prev     *batchMap
		inflight chan error // the chunk before's commit
	)
	txn := s.db.NewTransaction(true)
	failed := func(err error) (smt.Hash, error) {
		if inflight != nil {
			<-inflight
		}
		txn.Discard()
		s.cache = make(mapCache) // it may hold tiles of a transaction that did not commit
		return smt.Hash{}, err
	}
	// The first transaction also carries the registry's leaf, so there is
	// one even when no serial changed.
	for chunk, first := <-encoded, true; first || chunk != nil; chunk, first = <-encoded, false {
		updates := make([]smt.Update, 0, len(chunk)+1)
		if first {
			updates = append(updates, u)
		}
		for _, e := range chunk {
			if e.err != nil {
				return failed(e.err)
			}
			if err := txn.Set(serialKey(e.serial), e.b); err != nil {
				return failed(err)
			}
			updates = append(updates, e.leaf)
		}
		m := newBatchMap(txn, s.cache, false)
		m.prev = prev
		var err error
		if root, err = smt.Apply(m, updates); err != nil {
			return failed(fmt.Errorf("serial map: %w", err))
		}
		if err := m.flush(); err != nil {
			return failed(err)
		}
		m.prev = nil // the next batch reads this one's tiles, not those before
		if inflight != nil {
			err := <-inflight
			if inflight = nil; err != nil {
				return failed(err)
			}
		}
		next := s.db.NewTransaction(true) // sees every chunk but this one
		m.commit()
		done := make(chan error, 1)
		txn.CommitWith(func(err error) { done <- err })
		txn, prev, inflight = next, m, done
	}
	if err := <-inflight; err != nil {
		inflight = nil
		return failed(err)
	}
	txn.Discard()
	mark.MapRoot = root
	err = s.db.Update(func(txn *badger.Txn) error {
		for _, c := range changes {
			if err := txn.Set(u64('r', c.Index), c.Envelope); err != nil {
				return err
			}
		}
		return txn.Set(metaKey("audit"), mark.marshal())
	})
	if err != nil {
		return smt.Hash{}, err
	}
	return root, s.db.Sync()
}

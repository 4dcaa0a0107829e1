package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/gpuledger/gpuledger/ledger/smt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Default limits.
const (
	DefaultMaxEnvelopeBytes  = 64 << 10
	DefaultMaxBatchEnvelopes = 1000
	DefaultMaxBatchBytes     = 8 << 20
)

// Config configures a Ledger.
type Config struct {
	// Dir is the badger directory. Required unless InMemory.
	Dir string
	// InMemory keeps the store in memory only, with a 16 MiB memtable, so
	// MaxBatchBytes must be at most 2 MiB: for tests and fuzzing, where
	// opening a store per input must be cheap.
	InMemory bool
	// Genesis is the genesis file's bytes (protojson gpuledger.v1.Genesis).
	// Required when the store is new; when the store exists it must be empty
	// or equal to the stored genesis.
	Genesis []byte
	// NodeSigner signs checkpoints (an Ed25519 signed-note key). Without it
	// the ledger applies and proves but cannot sign checkpoints.
	NodeSigner note.Signer
	// Logger receives the ledger's logs (and badger's, at warning and above).
	// slog.Default() when nil.
	Logger *slog.Logger
	// SyncWrites makes every batch durable on disk before Apply returns
	// (badger fsyncs once per batch). Turn it off only when another durable
	// log (raft) can replay what a crash loses: the store records the last
	// applied replication index in the same transaction as the batch, so a
	// replay resumes exactly.
	SyncWrites bool
	// MaxEnvelopeBytes limits one envelope's size.
	MaxEnvelopeBytes int
	// MaxBatchEnvelopes limits how many envelopes one batch may hold.
	MaxBatchEnvelopes int
	// MaxBatchBytes limits the total size of a batch's envelopes, so that a
	// batch always fits in one badger transaction (see badgerOptions).
	MaxBatchBytes int
	// VerifyWorkers is how many goroutines verify a batch's signatures;
	// GOMAXPROCS when 0.
	VerifyWorkers int
	// NoDetectors turns off the finding detectors that cost work in Apply
	// (the findings tables, IMPOSSIBLE_TRAVEL, TRANSSHIPMENT_HUB and
	// RAPID_RESALE), to measure what they cost. For benchmarks only: a store written without them is not the
	// ledger's replicated state.
	NoDetectors bool
	// NoSerialMap turns off the serial map (maps.go), to measure what it
	// costs. For benchmarks only, like NoDetectors.
	NoSerialMap bool
	// StaleMap makes the node sign every checkpoint with the serial map
	// root of log size StaleMapSize, whatever the checkpoint's size: a lying
	// operator serving an old map beside a new log, for tests of the
	// auditors that must catch it.
	StaleMap     bool
	StaleMapSize uint64

	// mapSnapshotEvery, when set, is the journal length after which Apply
	// writes a snapshot of the serial map's top levels (tests).
	mapSnapshotEvery int
	// ReadOnly opens an existing store for reads only: nothing is written,
	// not even badger's own files (a node on a full disk serves reads so).
	// Apply fails.
	ReadOnly bool
}

// DefaultConfig returns a Config for dir with durable writes and default limits.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:               dir,
		SyncWrites:        true,
		MaxEnvelopeBytes:  DefaultMaxEnvelopeBytes,
		MaxBatchEnvelopes: DefaultMaxBatchEnvelopes,
		MaxBatchBytes:     DefaultMaxBatchBytes,
	}
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	if c.Dir == "" && !c.InMemory {
		return errors.New("ledger config: Dir is required")
	}
	if c.InMemory && c.MaxBatchBytes > 2<<20 {
		return errors.New("ledger config: an InMemory store takes batches of at most 2 MiB (MaxBatchBytes)")
	}
	if c.MaxEnvelopeBytes <= 0 || c.MaxBatchEnvelopes <= 0 || c.MaxBatchBytes <= 0 {
		return errors.New("ledger config: MaxEnvelopeBytes, MaxBatchEnvelopes and MaxBatchBytes must be positive")
	}
	if c.MaxBatchBytes > maxTxnBytes/2 {
		return fmt.Errorf("ledger config: MaxBatchBytes %d is over %d, half of what one badger transaction holds", c.MaxBatchBytes, maxTxnBytes/2)
	}
	if c.VerifyWorkers < 0 {
		return errors.New("ledger config: VerifyWorkers must not be negative")
	}
	return nil
}

// Errors returned by reads. Wrapped with context; test with errors.Is.
var (
	// ErrNotFound means the serial, entry or participant does not exist (yet).
	ErrNotFound = errors.New("not found")
	// ErrInvalidArgument means a read's arguments are out of range.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNoSigner means the ledger was opened without a node key.
	ErrNoSigner = errors.New("no node key: cannot sign checkpoints")
	// ErrGenesisMismatch means the store was created from another genesis.
	ErrGenesisMismatch = errors.New("genesis does not match the store's")
)

// Ledger is an open ledger store. Apply calls are serialised; reads run
// concurrently with each other and with Apply and see whole batches only.
type Ledger struct {
	cfg      Config
	log      *slog.Logger
	db       *badger.DB
	genesis  []byte
	ledgerID [32]byte
	idHex    string // hex of ledgerID: what signed payloads name
	origin   string
	keyCache keys.Cache

	pre preverified

	applyMu sync.Mutex
	// mapCache is the serial map's top levels, every tile of them
	// (maptop.go). Apply reads it under applyMu and changes it under mapMu
	// too, as its transaction commits; readers of the map hold mapMu's
	// read lock, so that the cache is of the store their transaction sees.
	mapMu    sync.RWMutex
	mapCache mapCache
	// mapJournaled counts the updates journaled since the top levels'
	// snapshot (under applyMu).
	mapJournaled int
	view         atomic.Pointer[view]

	cpMu sync.Mutex
	cp   *pb.Checkpoint // latest signed checkpoint, by size
}

// view is what readers see: the state after the last whole batch.
type view struct {
	size    uint64
	root    tlog.Hash
	reg     *Registry
	applied uint64
	at      time.Time // the last batch's acceptance time
	// mapRoot is the serial map's root; hasMap is false for a store that
	// keeps none (NoSerialMap, or written before the map).
	mapRoot smt.Hash
	hasMap  bool
}

// Open opens (creating if needed) the ledger in cfg.Dir.
func Open(ctx context.Context, cfg Config) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.VerifyWorkers == 0 {
		cfg.VerifyWorkers = runtime.GOMAXPROCS(0)
	}
	db, err := badger.Open(badgerOptions(cfg))
	if err != nil && strings.Contains(err.Error(), "Cannot acquire directory lock") {
		return nil, fmt.Errorf("open store %q: %w", cfg.Dir, ErrStoreInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", cfg.Dir, err)
	}
	l := &Ledger{cfg: cfg, log: cfg.Logger, db: db, mapCache: make(mapCache)}
	if cfg.ReadOnly && cfg.Genesis != nil {
		// load stores the genesis of a new store; a read-only one must
		// have it already (load checks it matches).
		if err := l.db.View(func(txn *badger.Txn) error { _, err := getValue(txn, metaKey("genesis")); return err }); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %q read-only: it holds no ledger yet (%v)", cfg.Dir, err)
		}
	}
	if err := l.load(ctx); err != nil {
		db.Close()
		return nil, err
	}
	v := l.view.Load()
	l.log.InfoContext(ctx, "ledger open", "dir", cfg.Dir, "ledger", hex.EncodeToString(l.ledgerID[:8]), "size", v.size)
	return l, nil
}

const (
	memTableBytes = 128 << 20
	maxTxnBytes   = memTableBytes * 15 / 100
)

// badgerOptions builds the one set of badger options the ledger uses.
func badgerOptions(cfg Config) badger.Options {
	o := badger.DefaultOptions(cfg.Dir)
	// SyncWrites: see Config.SyncWrites. One fsync per batch, never per entry.
	o.SyncWrites = cfg.SyncWrites
	o.Logger = badgerLogger{cfg.Logger}
	o.MetricsEnabled = false
	// Values over 1 KiB (ML-DSA-65 and hybrid envelopes, ~3.6 KiB) go to the
	// value log and the LSM tree keeps a pointer (badger's WiscKey layout):
	// they are written once instead of being rewritten by every compaction,
	// which measured 47% faster for such batches (BenchmarkStorageCeiling).
	// Entries are never overwritten or deleted, so the value log never needs
	// garbage collection (what is replaced, the serial map's snapshot, is a
	// file of its own: maptop.go). Ed25519 entries and serial states stay in
	// the tree.
	o.ValueThreshold = 1 << 10
	o.NumVersionsToKeep = 1
	// One writer (Apply holds applyMu): no concurrent transactions to detect
	// conflicts between.
	o.DetectConflicts = false
	// A batch is one transaction, and badger caps a transaction at 15% of
	// the memtable: 128 MiB gives room for MaxBatchBytes of envelopes plus the
	// hashes and indexes written beside them.
	o.MemTableSize = memTableBytes
	if cfg.InMemory {
		o = o.WithInMemory(true).WithDir("").WithValueDir("").WithMemTableSize(16 << 20).WithValueThreshold(1 << 20).
			WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20).WithNumMemtables(1).WithNumLevelZeroTables(1).WithNumLevelZeroTablesStall(2)
	}
	// Badger maps its files and sizes them ahead, sparsely: the active
	// memtable's write-ahead log at twice MemTableSize and the active value
	// log file at twice ValueLogFileSize. A write into a page of such a file
	// that the disk has no room for kills the process with SIGBUS. Value log
	// files of 128 MiB (not badger's 1 GiB) keep what is reserved and not yet
	// written at 512 MiB at most for the ledger (the raft log's: 288 MiB), less
	// than the free space a node keeps (--min-free-space, 1 GiB): the node
	// stops writing before its stores could run out of disk (node/space.go).
	o.ValueLogFileSize = ValueLogFileBytes
	o.ReadOnly = cfg.ReadOnly
	return o
}

// ValueLogFileBytes is the size of the ledger's (and the raft log's) value
// log files.
const ValueLogFileBytes = 128 << 20

// SparseReserveBytes is the most the ledger's store holds reserved on disk
// and not yet written: its active write-ahead log and value log file.
const SparseReserveBytes = 2*memTableBytes + 2*ValueLogFileBytes

func (l *Ledger) load(ctx context.Context) error {
	var stored []byte
	var size, applied uint64
	var at time.Time
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		if stored, err = getValue(txn, metaKey("genesis")); err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if b, err := getValue(txn, metaKey("size")); err == nil {
			size = binary.BigEndian.Uint64(b)
		}
		if b, err := getValue(txn, metaKey("applied")); err == nil {
			applied = binary.BigEndian.Uint64(b)
		}
		if b, err := getValue(txn, metaKey("at")); err == nil {
			at = time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC()
		} else if size > 0 { // a store from before the key: the last entry's time
			b, err := getValue(txn, entryKey(size-1))
			e := new(pb.Entry)
			if err != nil || proto.Unmarshal(b, e) != nil {
				return fmt.Errorf("read entry %d: %v", size-1, err)
			}
			at = e.GetAcceptedAt().AsTime()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load store: %w", err)
	}
	switch {
	case stored == nil && l.cfg.Genesis == nil:
		return fmt.Errorf("open ledger %q: the store is new and no genesis was given", l.cfg.Dir)
	case stored == nil:
		stored = l.cfg.Genesis
		g, err := ParseGenesis(stored)
		if err != nil {
			return err
		}
		reg, err := newRegistry(g)
		if err != nil {
			return err
		}
		if err := l.db.Update(func(txn *badger.Txn) error {
			if err := txn.Set(metaKey("genesis"), stored); err != nil {
				return err
			}
			if l.cfg.NoSerialMap {
				return nil
			}
			return initMap(txn, reg)
		}); err != nil {
			return fmt.Errorf("store genesis: %w", err)
		}
	case l.cfg.Genesis != nil && !bytes.Equal(stored, l.cfg.Genesis):
		return fmt.Errorf("open ledger %q: %w (store %x, given %x)", l.cfg.Dir, ErrGenesisMismatch, sha256.Sum256(stored), sha256.Sum256(l.cfg.Genesis))
	}
	g, err := ParseGenesis(stored)
	if err != nil {
		return err
	}
	l.genesis = stored
	l.ledgerID = sha256.Sum256(stored)
	l.idHex = hex.EncodeToString(l.ledgerID[:])
	l.origin = "gpuledger/" + l.idHex
	reg, err := newRegistry(g)
	if err != nil {
		return err
	}
	if size > 0 {
		if err := l.quickCheck(size); err != nil {
			return fmt.Errorf("open ledger %q: %w (run gpuledgerd check for a full report)", l.cfg.Dir, err)
		}
	}
	reg, err = l.replayRegistry(ctx, reg, size)
	if err != nil {
		return err
	}
	var root tlog.Hash
	if size > 0 {
		if err := l.db.View(func(txn *badger.Txn) error {
			root, err = tlog.TreeHash(int64(size), &hashReader{txn: txn})
			return err
		}); err != nil {
			return fmt.Errorf("load tree: %w", err)
		}
	} else {
		root = sha256.Sum256(nil)
	}
	nv := &view{size: size, root: root, reg: reg, applied: applied, at: at}
	if err := l.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, metaKey("map"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil || len(b) != smt.HashSize {
			return fmt.Errorf("%w: the serial map's root: %v", ErrCorrupt, err)
		}
		copy(nv.mapRoot[:], b)
		nv.hasMap = true
		return nil
	}); err != nil {
		return err
	}
	rebuilt := false
	if nv.hasMap {
		if rebuilt, err = l.loadMap(reg); err != nil {
			return fmt.Errorf("open ledger %q: %w", l.cfg.Dir, err)
		}
	}
	l.view.Store(nv)
	if rebuilt && !l.cfg.ReadOnly {
		// So that the next start need not rebuild them again.
		if err := l.snapshotMap(); err != nil {
			l.log.Warn("serial map snapshot", "err", err)
		}
	}
	return nil
}

// LastAcceptedAt returns the acceptance time of the last batch applied (zero
// before the first). A batch's time is never before it (see Apply).
func (l *Ledger) LastAcceptedAt() time.Time { return l.view.Load().at }

// ErrStoreInUse is returned by Open when another process (a running node)
// holds the store: stop it first.
var ErrStoreInUse = errors.New("another process (a running node?) holds this store; stop it first")

// ParseGenesis parses and checks a genesis file.
func ParseGenesis(data []byte) (*pb.Genesis, error) {
	g := new(pb.Genesis)
	if err := protojson.Unmarshal(data, g); err != nil {
		return nil, fmt.Errorf("parse genesis: %w", err)
	}
	if _, err := newRegistry(g); err != nil {
		return nil, err
	}
	return g, nil
}

// Close closes the store, writing the serial map's top levels first so
// that the next Open has no journal to replay. Apply must not be running.
func (l *Ledger) Close() error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	if l.mapJournaled > 0 && !l.cfg.ReadOnly {
		if err := l.snapshotMap(); err != nil {
			l.log.Warn("closing the store without a snapshot of the serial map's top levels: the next start replays their journal", "err", err)
		}
	}
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Size returns the number of entries in the log.
func (l *Ledger) Size() uint64 { return l.view.Load().size }

// Root returns the Merkle tree hash of the whole log.
func (l *Ledger) Root() tlog.Hash { return l.view.Load().root }

// CurrentMapRoot returns the serial map's root at Size, and false for a
// store that keeps no map.
func (l *Ledger) CurrentMapRoot() (smt.Hash, bool) {
	v := l.view.Load()
	return v.mapRoot, v.hasMap
}

// AppliedIndex returns the replication index recorded with the last batch.
func (l *Ledger) AppliedIndex() uint64 { return l.view.Load().applied }

// Registry returns the registry as it stands after the last batch.
func (l *Ledger) Registry() *Registry { return l.view.Load().reg }

// Genesis returns the genesis file's bytes.
func (l *Ledger) Genesis() []byte { return bytes.Clone(l.genesis) }

// LedgerID returns the SHA-256 of the genesis file.
func (l *Ledger) LedgerID() [32]byte { return l.ledgerID }

// IDFromOrigin returns the ledger id of a checkpoint origin
// ("gpuledger/" and 64 lowercase hex digits).
func IDFromOrigin(origin string) (string, error) {
	id, ok := strings.CutPrefix(origin, "gpuledger/")
	if _, err := hex.DecodeString(id); !ok || err != nil || len(id) != 64 || strings.ToLower(id) != id {
		return "", fmt.Errorf("checkpoint origin %s is not gpuledger/ and a ledger id (64 lowercase hex digits)", custody.Quote(origin))
	}
	return id, nil
}

// ID returns the ledger id as signed payloads name it: lowercase hex of
// the SHA-256 of the genesis file.
func (l *Ledger) ID() string { return l.idHex }

// Origin returns the checkpoint origin line.
func (l *Ledger) Origin() string { return l.origin }

// Key helpers.

func metaKey(name string) []byte { return append([]byte{'m'}, name...) }

func u64(prefix byte, n uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], n)
	return k
}

func entryKey(i uint64) []byte      { return u64('e', i) }
func regKey(i uint64) []byte        { return u64('r', i) }
func treeKey(i int64) []byte        { return u64('t', uint64(i)) }
func hashKey(h []byte) []byte       { return append([]byte{'h'}, h...) }
func serialKey(s string) []byte     { return append([]byte{'s'}, s...) }
func historyPrefix(s string) []byte { return append(append([]byte{'c'}, s...), 0) }
func historyKey(s string, n uint64) []byte {
	return binary.BigEndian.AppendUint64(historyPrefix(s), n)
}

func be64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func getValue(txn *badger.Txn, key []byte) ([]byte, error) {
	it, err := txn.Get(key)
	if err != nil {
		return nil, err
	}
	return it.ValueCopy(nil)
}

// hashReader reads Merkle hashes from a badger transaction, preferring those
// a batch has computed but not yet committed.
type hashReader struct {
	txn     *badger.Txn
	pending map[int64]tlog.Hash
}

func (r *hashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if h, ok := r.pending[idx]; ok {
			out[i] = h
			continue
		}
		it, err := r.txn.Get(treeKey(idx))
		if err != nil {
			return nil, fmt.Errorf("read tree hash %d: %w", idx, err)
		}
		if err := it.Value(func(v []byte) error {
			if len(v) != tlog.HashSize {
				return fmt.Errorf("tree hash %d has %d bytes", idx, len(v))
			}
			copy(out[i][:], v)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// leafTag starts every leaf's data (domain separation).
const leafTag = "gpuledger-entry-v1"

// leafData is the fixed 58-byte encoding a Merkle leaf commits to:
// leafTag || uint64be(index) || int64be(accepted_at Unix ns) || entry hash.
func leafData(index uint64, acceptedAtNanos int64, entryHash [32]byte) []byte {
	b := make([]byte, 0, len(leafTag)+16+len(entryHash))
	b = append(b, leafTag...)
	b = binary.BigEndian.AppendUint64(b, index)
	b = binary.BigEndian.AppendUint64(b, uint64(acceptedAtNanos))
	return append(b, entryHash[:]...)
}

// LeafHash returns the RFC 6962 leaf hash of an entry from its index,
// acceptance time and entry hash (SHA-256 of the envelope).
func LeafHash(index uint64, acceptedAtNanos int64, entryHash [32]byte) tlog.Hash {
	return tlog.RecordHash(leafData(index, acceptedAtNanos, entryHash))
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(string, ...any)        {}
func (b badgerLogger) Debugf(string, ...any)       {}

// Sync makes every applied batch durable (for stores opened without
// SyncWrites).
func (l *Ledger) Sync() error {
	if err := l.db.Sync(); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	return nil
}

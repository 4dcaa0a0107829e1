package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/hashicorp/raft"
)

// raftStore is raft's LogStore and StableStore on a badger database of its
// own (Dir/raft/log). Keys:
//
//	'l' uint64be(index)  a log entry: uint64be(term) byte(type) int64be(appended_at ns)
//	                     uvarint(len(data)) data uvarint(len(extensions)) extensions
//	's' key              a stable value
//
// Writes are synchronous: raft's log is the durable record of what was
// committed, and the ledger's own writes may lag behind it.
type raftStore struct {
	db *badger.DB
	// check, if set, judges entries before they are stored; an error
	// stores none of them (the leader's dates: clock.go).
	check func([]*raft.Log) error
}

// raftSparseReserveBytes is the most the raft log's store holds reserved on
// disk and not yet written (see ledger.SparseReserveBytes).
const raftSparseReserveBytes = 2*(16<<20) + 2*ledger.ValueLogFileBytes

func openRaftStore(dir string, log *slog.Logger) (*raftStore, error) {
	o := badger.DefaultOptions(dir)
	o.SyncWrites = true
	o.Logger = badgerLogger{log}
	o.MetricsEnabled = false
	o.MemTableSize = 16 << 20
	o.ValueLogFileSize = ledger.ValueLogFileBytes // see ledger's badgerOptions: sparse files
	o.NumVersionsToKeep = 1
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("open raft log %q: %w", dir, err)
	}
	return &raftStore{db: db}, nil
}

func (s *raftStore) Close() error { return s.db.Close() }

func logKey(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'l'}, i) }

func (s *raftStore) edge(reverse bool) (uint64, error) {
	var idx uint64
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues, o.Reverse, o.Prefix = false, reverse, []byte{'l'}
		it := txn.NewIterator(o)
		defer it.Close()
		seek := []byte{'l'}
		if reverse {
			seek = []byte{'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		}
		it.Seek(seek)
		if it.ValidForPrefix(o.Prefix) {
			idx = binary.BigEndian.Uint64(it.Item().Key()[1:])
		}
		return nil
	})
	return idx, err
}

func (s *raftStore) FirstIndex() (uint64, error) { return s.edge(false) }
func (s *raftStore) LastIndex() (uint64, error)  { return s.edge(true) }

func (s *raftStore) GetLog(index uint64, out *raft.Log) error {
	return s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(logKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return decodeLog(index, v, out) })
	})
}

func (s *raftStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *raftStore) StoreLogs(logs []*raft.Log) error {
	if s.check != nil {
		if err := s.check(logs); err != nil {
			return err
		}
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, l := range logs {
		if err := wb.Set(logKey(l.Index), encodeLog(l)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

func (s *raftStore) DeleteRange(min, max uint64) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for i := min; i <= max && i >= min; i++ {
		if err := wb.Delete(logKey(i)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

func stableKey(k []byte) []byte { return append([]byte{'s'}, k...) }

func (s *raftStore) Set(k, v []byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(stableKey(k), v) })
}

func (s *raftStore) Get(k []byte) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(stableKey(k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return errors.New("not found") // raft treats any error on a missing key as "unset"
		}
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	return v, err
}

func (s *raftStore) SetUint64(k []byte, v uint64) error {
	return s.Set(k, binary.BigEndian.AppendUint64(nil, v))
}

func (s *raftStore) GetUint64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	if err != nil || len(v) != 8 {
		return 0, nil // unset reads as zero, as raft expects
	}
	return binary.BigEndian.Uint64(v), nil
}

func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 17+8+2*binary.MaxVarintLen64+len(l.Data)+len(l.Extensions))
	b = binary.BigEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.BigEndian.AppendUint64(b, uint64(l.AppendedAt.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

func decodeLog(index uint64, v []byte, out *raft.Log) error {
	bad := fmt.Errorf("raft log entry %d is corrupt", index)
	if len(v) < 17 {
		return bad
	}
	out.Index, out.Term, out.Type = index, binary.BigEndian.Uint64(v), raft.LogType(v[8])
	out.AppendedAt = time.Unix(0, int64(binary.BigEndian.Uint64(v[9:17])))
	v = v[17:]
	read := func() ([]byte, error) {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return nil, bad
		}
		out := append([]byte(nil), v[k:k+int(n)]...)
		v = v[k+int(n):]
		return out, nil
	}
	var err error
	if out.Data, err = read(); err != nil {
		return err
	}
	if out.Extensions, err = read(); err != nil {
		return err
	}
	return nil
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error("raft log: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn("raft log: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(string, ...any)        {}
func (b badgerLogger) Debugf(string, ...any)       {}

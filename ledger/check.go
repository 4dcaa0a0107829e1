package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"
)

// ErrCorrupt means the store does not hold together; the CorruptError says
// where.
var ErrCorrupt = errors.New("store is corrupt")

// CorruptError names the first entry (or serial) at which a store check
// failed.
type CorruptError struct {
	Index  int64 // -1 when the problem is a serial's, not an entry's
	Serial string
	What   string
}

func (e *CorruptError) Error() string {
	if e.Index < 0 && e.Serial == "" {
		return "store check: " + e.What
	}
	if e.Index < 0 {
		return fmt.Sprintf("store check: serial %s: %s", e.Serial, e.What)
	}
	return fmt.Sprintf("store check: entry %d: %s", e.Index, e.What)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// checkEntry compares entry i with the store's Merkle leaf and hash index.
func checkEntry(txn *badger.Txn, i uint64) error {
	e, err := loadEntry(txn, i, false)
	if errors.Is(err, ErrNotFound) {
		return &CorruptError{Index: int64(i), What: "missing"}
	}
	if err != nil {
		return &CorruptError{Index: int64(i), What: err.Error()}
	}
	hs, err := (&hashReader{txn: txn}).ReadHashes([]int64{tlog.StoredHashIndex(0, int64(i))})
	if err != nil {
		return &CorruptError{Index: int64(i), What: "no Merkle leaf: " + err.Error()}
	}
	if !bytes.Equal(hs[0][:], e.GetLeafHash()) {
		return &CorruptError{Index: int64(i), What: "its bytes do not hash to the Merkle leaf the log committed to (edited, or moved)"}
	}
	b, err := getValue(txn, hashKey(e.GetEntryHash()))
	if err != nil || binary.BigEndian.Uint64(b) != i {
		return &CorruptError{Index: int64(i), What: "the hash index does not point back to it"}
	}
	return nil
}

// QuickCheckEntries is how many of the newest entries the start-up check reads.
const QuickCheckEntries = 64

// quickCheck is the start-up check of the log's head: the size matches the
// entries present, the newest entries hash to the Merkle leaves committed
// for them and are found by their hash, and the serial states they touch
// name the right head.
func (l *Ledger) quickCheck(size uint64) error {
	return l.db.View(func(txn *badger.Txn) error {
		if _, err := txn.Get(entryKey(size)); err == nil {
			return &CorruptError{Index: int64(size), What: fmt.Sprintf("present beyond the recorded size %d", size)}
		}
		for i := size - min(size, QuickCheckEntries); i < size; i++ {
			if err := checkEntry(txn, i); err != nil {
				return err
			}
			e, _ := loadEntry(txn, i, true)
			ev := e.GetEvent()
			if ev == nil {
				continue
			}
			b, err := getValue(txn, serialKey(ev.GetSerial()))
			if err != nil {
				return &CorruptError{Index: int64(i), What: fmt.Sprintf("serial %s has no state", ev.GetSerial())}
			}
			st := new(pb.SerialState)
			if err := proto.Unmarshal(b, st); err != nil {
				return &CorruptError{Index: -1, Serial: ev.GetSerial(), What: "state does not decode"}
			}
			switch {
			case st.GetLastIndex() < i:
				return &CorruptError{Index: -1, Serial: ev.GetSerial(), What: fmt.Sprintf("state ends at entry %d, before its entry %d", st.GetLastIndex(), i)}
			case st.GetLastIndex() == i && !bytes.Equal(st.GetHeadHash(), e.GetEntryHash()):
				return &CorruptError{Index: -1, Serial: ev.GetSerial(), What: fmt.Sprintf("state names head %x; its last entry %d is %x", st.GetHeadHash(), i, e.GetEntryHash())}
			}
		}
		return nil
	})
}

// CheckStore checks the whole store against itself: every entry present,
// hashing to its committed Merkle leaf, found again by its hash; the stored
// tree hashing to the root; every serial's state naming its last entry as
// head. It returns the first problem as a *CorruptError. progress, if set, is
// called with the entries checked so far. Signatures and chain links are
// checked by package verify.
func (l *Ledger) CheckStore(ctx context.Context, progress func(uint64)) error {
	size := l.Size()
	const chunk = 4096
	for start := uint64(0); start < size; start += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := l.db.View(func(txn *badger.Txn) error {
			for i := start; i < min(size, start+chunk); i++ {
				if err := checkEntry(txn, i); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if progress != nil {
			progress(min(size, start+chunk))
		}
	}
	return l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{'s'}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
			serial := string(it.Item().Key()[1:])
			st := new(pb.SerialState)
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, st) }); err != nil {
				return &CorruptError{Index: -1, Serial: serial, What: "state does not decode"}
			}
			b, err := getValue(txn, historyKey(serial, st.GetEventCount()-1))
			if err != nil || st.GetEventCount() == 0 {
				return &CorruptError{Index: -1, Serial: serial, What: fmt.Sprintf("state counts %d events; the history does not", st.GetEventCount())}
			}
			idx := binary.BigEndian.Uint64(b)
			e, err := loadEntry(txn, idx, false)
			if err != nil {
				return &CorruptError{Index: int64(idx), What: "a serial's last entry is missing"}
			}
			if h := sha256.Sum256(e.GetEnvelope()); !bytes.Equal(h[:], st.GetHeadHash()) || idx != st.GetLastIndex() {
				return &CorruptError{Index: -1, Serial: serial, What: fmt.Sprintf("state names head %x at entry %d; the history ends at entry %d, %x", st.GetHeadHash(), st.GetLastIndex(), idx, h[:])}
			}
		}
		return nil
	})
}

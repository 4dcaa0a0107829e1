package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"

	badger "github.com/dgraph-io/badger/v4"
)

// SetMapSnapshotEvery makes Apply write a snapshot of the serial map's top
// levels whenever n updates are journaled.
func SetMapSnapshotEvery(c *Config, n int) { c.mapSnapshotEvery = n }

// Crash closes the store as a crash leaves it: what was committed, and no
// snapshot of the serial map's top levels beyond the last one.
func Crash(l *Ledger) error { return l.db.Close() }

// SnapshotMap writes a snapshot of the serial map's top levels now.
func SnapshotMap(l *Ledger) error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	return l.snapshotMap()
}

// MapJournal reports the updates journaled since the last snapshot, and
// after how many Apply writes the next.
func MapJournal(l *Ledger) (journaled, every int) {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	return l.mapJournaled, max(mapSnapshotMin, 2*len(l.mapCache))
}

// AlterMapSnapshot flips the last byte of the tiles at depth in the
// snapshot of the serial map's top levels (the first such tile, or all),
// and returns how many it changed.
func AlterMapSnapshot(txn *badger.Txn, depth int, all bool) (int, error) {
	mark, err := getValue(txn, metaKey("maptop"))
	if err != nil {
		return 0, err
	}
	_, gen, err := parseTopMark(mark)
	if err != nil {
		return 0, err
	}
	changed := 0
	for i := uint32(0); ; i++ {
		v, err := getValue(txn, chunkKey(gen, i))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return changed, nil
		}
		if err != nil {
			return changed, err
		}
		v = bytes.Clone(v)
		for b := v; len(b) > 0; {
			n := (int(b[0]) + 7) / 8
			size := int(binary.BigEndian.Uint16(b[1+n:]))
			if int(b[0]) == depth && (all || changed == 0) {
				b[1+n+2+size-1] ^= 1
				changed++
			}
			b = b[1+n+2+size:]
		}
		if err := txn.Set(chunkKey(gen, i), v); err != nil {
			return changed, err
		}
	}
}

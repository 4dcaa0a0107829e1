package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
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
	return l.mapJournaled, l.mapSnapshotEvery()
}

// AlterMapSnapshot flips the last byte of the tiles at depth in the
// snapshot file of the serial map's top levels in dir (the first such
// tile, or all) and writes the file back with its checksum made good, as
// a deliberate change would; it returns how many tiles it changed.
func AlterMapSnapshot(dir string, depth int, all bool) (int, error) {
	path := filepath.Join(dir, mapSnapshotFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	changed := 0
	body := b[len(mapSnapshotMagic)+8+32 : len(b)-32]
	for t := body; len(t) > 0; {
		n := (int(t[0]) + 7) / 8
		size := int(binary.BigEndian.Uint16(t[1+n:]))
		if int(t[0]) == depth && (all || changed == 0) {
			t[1+n+2+size-1] ^= 1
			changed++
		}
		t = t[1+n+2+size:]
	}
	sum := sha256.Sum256(b[:len(b)-32])
	copy(b[len(b)-32:], sum[:])
	return changed, os.WriteFile(path, b, 0o600)
}

// SetAuditChunk makes AuditStore.Commit write n serials a transaction,
// until the returned function restores the default.
func SetAuditChunk(n int) (restore func()) {
	old := auditChunk
	auditChunk = n
	return func() { auditChunk = old }
}

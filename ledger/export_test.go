package ledger

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

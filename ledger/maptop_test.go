package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/smt"
)

// TestMapWrittenBehind: a store that writes the serial map's top levels
// behind (a snapshot every 2,500 updates here) and one that writes them
// only at Close agree on every root, batch by batch, over 30,000 serials
// (enough for tiles below the top levels) and the mixed stream; the first
// crashes (no snapshot, the journal replayed at Open) after batches before,
// at and after its snapshots, and comes back with the same root, a map that
// checks, and proofs that verify. A journal below the snapshot is ignored.
// A journal or snapshot file that no longer gives the recorded root, or no
// snapshot file, and Open rebuilds the top levels from the serials' states;
// a tile changed below the root tile, and CheckMap names the serial map; a
// recorded root that nothing gives, and Open refuses the store.
func TestMapWrittenBehind(t *testing.T) {
	ctx := context.Background()
	open := func(dir string, every int) *ledger.Ledger {
		t.Helper()
		cfg := ledger.DefaultConfig(dir)
		cfg.Genesis, cfg.NodeSigner = testConsortium.Genesis, testConsortium.NodeSigner
		cfg.Logger = slog.New(slog.DiscardHandler)
		if every > 0 {
			ledger.SetMapSnapshotEvery(&cfg, every)
		}
		l, err := ledger.Open(ctx, cfg)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return l
	}
	made := manufactures(testConsortium, 30_000)
	var batches [][][]byte
	for i := 0; i < len(made); i += 1000 {
		batches = append(batches, made[i:i+1000])
	}
	batches = append(batches, mixedBatches(5, 300)...)
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := open(dirA, 2500), open(dirB, 0)
	defer func() { b.Close() }()
	at := t0.Add(365 * 24 * time.Hour)
	crashes := 0
	for i, batch := range batches {
		for _, l := range []*ledger.Ledger{a, b} {
			l.Preverify(batch)
			if _, err := l.Apply(ctx, ledger.Batch{AcceptedAt: at.Add(time.Duration(i) * time.Second), Envelopes: batch}); err != nil {
				t.Fatal(err)
			}
		}
		if i%3 == 1 || i == len(batches)-1 {
			if err := ledger.Crash(a); err != nil {
				t.Fatal(err)
			}
			a, crashes = open(dirA, 2500), crashes+1
		}
		ra, errA := a.MapRoot(a.Size())
		rb, errB := b.MapRoot(b.Size())
		if errA != nil || errB != nil || ra != rb {
			t.Fatalf("batch %d: map roots %x (%v) and %x (%v)", i, ra, errA, rb, errB)
		}
	}
	for _, l := range []*ledger.Ledger{a, b} {
		root, err := l.CheckMap(ctx)
		if want, _ := l.MapRoot(l.Size()); err != nil || root != want {
			t.Fatalf("CheckMap: %x, %v; want %x", root, err, want)
		}
		leaves, _, err := l.MapStats(ctx)
		if err != nil || leaves != len(allSerials(t, l))+1 {
			t.Fatalf("MapStats: %d leaves, %v; want the %d serials and the registry", leaves, err, len(allSerials(t, l)))
		}
		for i := 0; i < 30_000; i += 997 {
			serial := fmt.Sprintf("PF-%08d", i)
			p, err := l.ProveSerial(serial)
			if err != nil || p.Value == nil || smt.Verify(p.Root, ledger.MapKey(serial), p.Value, p.Proof) != nil {
				t.Fatalf("the proof of %s: %v", serial, err)
			}
		}
	}
	t.Logf("%d batches, %d crashes", len(batches), crashes)

	// A journal entry below the snapshot (one a crash kept from being
	// deleted) is not replayed.
	size := a.Size()
	want, _ := a.MapRoot(size)
	a.Close()
	raw := func(change func(*badger.Txn)) {
		t.Helper()
		db, err := badger.Open(badger.DefaultOptions(dirA).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(txn *badger.Txn) error { change(txn); return nil }); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	journalKey := func(n uint64) []byte { return append([]byte{'J'}, be64(n)...) }
	raw(func(txn *badger.Txn) { txn.Set(journalKey(size), bytes.Repeat([]byte{0xff}, 64)) })
	a = open(dirA, 2500)
	if got, _ := a.CheckMap(ctx); got != want {
		t.Fatalf("after a stale journal entry: root %x, want %x", got, want)
	}

	// A journal changed on disk: the snapshot and the journal no longer give
	// the recorded root, so Open rebuilds the top levels from the serials'
	// states, which do.
	batch := workload.New(testConsortium, 77, t0).Records("WB", 40)
	a.Preverify(batch)
	if _, err := a.Apply(ctx, ledger.Batch{AcceptedAt: at.Add(time.Hour), Envelopes: batch}); err != nil {
		t.Fatal(err)
	}
	last := a.Size()
	if last != size+40 {
		t.Fatalf("log size %d after 40 new records on %d", last, size)
	}
	want, _ = a.MapRoot(last)
	ledger.Crash(a)
	raw(func(txn *badger.Txn) {
		item, err := txn.Get(journalKey(last))
		if err != nil {
			t.Fatalf("no journal at log size %d: %v", last, err)
		}
		v, _ := item.ValueCopy(nil)
		for i := 63; i < len(v); i += 64 {
			v[i] ^= 1 // every update's value (a value whose leaf sits below the top levels is not read: the tile there is the latest)
		}
		txn.Set(journalKey(last), v)
	})
	checked := func(dir string) error {
		t.Helper()
		cfg := ledger.DefaultConfig(dir)
		cfg.Genesis, cfg.Logger = testConsortium.Genesis, slog.New(slog.DiscardHandler)
		l, err := ledger.Open(ctx, cfg)
		if err != nil {
			return err
		}
		defer l.Close()
		root, err := l.CheckMap(ctx)
		if err == nil && root != want {
			t.Fatalf("the map's root is %x, want %x", root, want)
		}
		return err
	}
	if err := checked(dirA); err != nil {
		t.Fatalf("after the journal was changed: %v", err)
	}

	// The snapshot file: its root tile changed (the checksum made good), a
	// byte of it changed, or the file gone: Open rebuilds from the states.
	// A tile below the root changed: the root still matches, and CheckMap
	// names the serial map.
	snap := filepath.Join(dirA, "serial-map-top")
	if fi, err := os.Stat(snap); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the snapshot file: %v, %v", fi, err)
	}
	keep, _ := os.ReadFile(snap)
	for _, tc := range []struct {
		name   string
		change func()
		fails  bool
	}{
		{"root tile", func() { ledger.AlterMapSnapshot(dirA, 0, false) }, false},
		{"a byte", func() { b := bytes.Clone(keep); b[len(b)/2] ^= 1; os.WriteFile(snap, b, 0o600) }, false},
		{"the file gone", func() { os.Remove(snap) }, false},
		{"deep tile", func() {
			if n, err := ledger.AlterMapSnapshot(dirA, 16, false); n != 1 || err != nil {
				t.Fatalf("no tile at depth 16 in the snapshot: %v", err)
			}
		}, true},
	} {
		os.WriteFile(snap, keep, 0o600)
		tc.change()
		err := checked(dirA)
		if tc.fails != (err != nil) || (err != nil && (!errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "serial map"))) {
			t.Fatalf("snapshot, %s: %v", tc.name, err)
		}
	}
	os.WriteFile(snap, keep, 0o600)

	// The recorded root changed: neither the snapshot nor the states give
	// it, and Open refuses the store, naming the serial map.
	raw(func(txn *badger.Txn) { txn.Set([]byte("mmap"), bytes.Repeat([]byte{7}, 32)) })
	os.Remove(snap)
	if err := checked(dirA); !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "serial map") {
		t.Fatalf("a store whose map root was changed: %v", err)
	}
}

func be64(n uint64) []byte {
	return []byte{byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

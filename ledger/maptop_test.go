package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
// checks, and proofs that verify. A journal below the snapshot is ignored;
// a journal or snapshot changed on disk is refused, naming the serial map.
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

	// A journal changed on disk: Open refuses the store.
	batch := workload.New(testConsortium, 77, t0).Records("WB", 40)
	a.Preverify(batch)
	if _, err := a.Apply(ctx, ledger.Batch{AcceptedAt: at.Add(time.Hour), Envelopes: batch}); err != nil {
		t.Fatal(err)
	}
	last := a.Size()
	if last != size+40 {
		t.Fatalf("log size %d after 40 new records on %d", last, size)
	}
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
	cfg := ledger.DefaultConfig(dirA)
	cfg.Genesis, cfg.Logger = testConsortium.Genesis, slog.New(slog.DiscardHandler)
	if l, err := ledger.Open(ctx, cfg); !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "serial map") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Open of a store whose map journal was changed: %v", err)
	}

	// A snapshot changed on disk: its root tile, and Open refuses; a deeper
	// tile, and CheckMap does.
	b.Close()
	for _, where := range []string{"root tile", "deep tile"} {
		raw := func(change func(*badger.Txn)) {
			db, err := badger.Open(badger.DefaultOptions(dirB).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(txn *badger.Txn) error { change(txn); return nil }); err != nil {
				t.Fatal(err)
			}
			db.Close()
		}
		depth := 0 // the root tile
		if where == "deep tile" {
			depth = 16
		}
		raw(func(txn *badger.Txn) {
			if n, err := ledger.AlterMapSnapshot(txn, depth, false); n != 1 || err != nil {
				t.Fatalf("no tile at depth %d in the snapshot: %v", depth, err)
			}
		})
		cfg := ledger.DefaultConfig(dirB)
		cfg.Genesis, cfg.Logger = testConsortium.Genesis, slog.New(slog.DiscardHandler)
		l, err := ledger.Open(ctx, cfg)
		if err == nil {
			_, err = l.CheckMap(ctx)
			l.Close()
		}
		if !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "serial map") {
			t.Fatalf("%s of the snapshot changed: %v", where, err)
		}
		raw(func(txn *badger.Txn) { ledger.AlterMapSnapshot(txn, depth, false) }) // back
	}

	// What a snapshot cut short leaves in the other generation is not read,
	// and the next snapshot clears it.
	var gen byte
	rawB := func(change func(*badger.Txn)) {
		db, err := badger.Open(badger.DefaultOptions(dirB).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(txn *badger.Txn) error { change(txn); return nil }); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	rawB(func(txn *badger.Txn) {
		item, _ := txn.Get([]byte("mmaptop"))
		mark, _ := item.ValueCopy(nil)
		gen = mark[8]
		txn.Set([]byte{'M', 1 - gen, 0, 0, 0, 0}, []byte("cut short"))
		txn.Set([]byte{'M', 1 - gen, 0, 0, 0, 7}, []byte("cut short"))
	})
	b = open(dirB, 0)
	root, err := b.CheckMap(ctx)
	if want, _ := b.MapRoot(b.Size()); err != nil || root != want {
		t.Fatalf("beside a snapshot cut short: %x, %v", root, err)
	}
	batch = workload.New(testConsortium, 78, t0).Records("WC", 40)
	b.Preverify(batch)
	if _, err := b.Apply(ctx, ledger.Batch{AcceptedAt: at.Add(2 * time.Hour), Envelopes: batch}); err != nil {
		t.Fatal(err)
	}
	if err := ledger.SnapshotMap(b); err != nil {
		t.Fatal(err)
	}
	b.Close()
	rawB(func(txn *badger.Txn) {
		item, _ := txn.Get([]byte("mmaptop"))
		mark, _ := item.ValueCopy(nil)
		if mark[8] == gen {
			t.Fatalf("the snapshot after %d is in the same generation", gen)
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'M', gen}})
		defer it.Close()
		if it.Rewind(); it.Valid() {
			t.Fatalf("the old generation is left: %x", it.Item().Key())
		}
	})
	b = open(dirB, 0)
}

func be64(n uint64) []byte {
	return []byte{byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

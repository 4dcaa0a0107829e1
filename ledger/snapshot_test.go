package ledger_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
)

// TestBackupRestore: a backup taken while batches keep being applied holds
// the store exactly as it was when it began; restoring it into another
// store of the same ledger gives the same size, root and serials, passes the
// store check, and restores what the store held before (it extends it).
// A store whose log the backup does not extend refuses it.
func TestBackupRestore(t *testing.T) {
	src := newFixture(t)
	man := func(f *fixture, i int) []byte {
		return f.sign("acme-gpu", pb.EventType_EVENT_TYPE_MANUFACTURED, fmt.Sprintf("GPU-B-%04d", i))
	}
	for i := range 200 {
		src.apply(man(src, i))
	}
	b := src.l.BeginBackup()
	size, root := src.l.Size(), src.l.Root()
	// Apply goes on while the backup is written.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 200; i < 400; i++ {
			src.apply(man(src, i))
		}
	}()
	var buf bytes.Buffer
	if _, err := b.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	b.Close()
	<-done

	// A store that holds a prefix of the log takes the backup.
	dst := newFixture(t)
	for i := range 50 {
		dst.apply(man(dst, i))
	}
	if dst.l.Root() == root {
		t.Fatal("setup: the prefix has the whole root")
	}
	old, err := dst.l.Restore(context.Background(), bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if old != 50 || dst.l.Size() != size || dst.l.Root() != root {
		t.Fatalf("restored %d → %d entries, root %x; want 50 → %d, %x", old, dst.l.Size(), dst.l.Root(), size, root)
	}
	if _, err := dst.l.Serial(context.Background(), "GPU-B-0199"); err != nil {
		t.Fatalf("restored store: %v", err)
	}
	if _, err := dst.l.Serial(context.Background(), "GPU-B-0200"); err == nil {
		t.Fatal("the backup holds a batch applied after it began")
	}
	if err := dst.l.CheckStore(context.Background(), nil); err != nil {
		t.Fatal(err)
	}

	// A store whose log differs from the backup's refuses it.
	other := newFixture(t)
	other.apply(other.sign("acme-gpu", pb.EventType_EVENT_TYPE_MANUFACTURED, "GPU-OTHER"))
	if _, err := other.l.Restore(context.Background(), bytes.NewReader(buf.Bytes())); err == nil || !strings.Contains(err.Error(), "does not extend") {
		t.Fatalf("Restore over a different log: %v", err)
	}
}

package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
)

// Fill applies whole lifecycles (8 entries each) of serials named
// prefix-0000000, ... to l until it holds at least n entries, in batches of
// about 1,000 accepted at the time of the last event. It fails on any
// rejection. progress, if set, is told the log's size after each batch.
func Fill(ctx context.Context, l *ledger.Ledger, c *consortium.Consortium, prefix string, n int, start time.Time, progress func(uint64)) error {
	g := New(c, 1, start)
	g.Step = time.Second
	at := start.Add(time.Duration(n/8)*time.Second + LifecycleSpan + time.Hour)
	apply := func(buf [][]byte) error {
		l.Preverify(buf)
		rs, err := l.Apply(ctx, ledger.Batch{AcceptedAt: at, Envelopes: buf})
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Err != nil {
				return fmt.Errorf("fill: %w", r.Err)
			}
		}
		if progress != nil {
			progress(l.Size())
		}
		return nil
	}
	var buf [][]byte
	for i := 0; int(l.Size())+len(buf) < n; i++ {
		buf = append(buf, g.Lifecycle(fmt.Sprintf("%s-%07d", prefix, i), 2)...)
		if len(buf) >= 992 {
			if err := apply(buf); err != nil {
				return err
			}
			buf = nil
		}
	}
	if len(buf) == 0 {
		return nil
	}
	return apply(buf)
}

// BenchDir is where benchmarks keep a store they build once and reuse:
// the temporary directory, named by name and the consortium's ledger id, so
// a store is never reused with another genesis.
func BenchDir(c *consortium.Consortium, name string) string {
	id := sha256.Sum256(c.Genesis)
	return filepath.Join(os.TempDir(), fmt.Sprintf("gpuledger-bench-%s-%s", name, hex.EncodeToString(id[:6])))
}

// OpenBench opens (creating) a benchmark's ledger in dir for consortium c,
// without synced writes or logs.
func OpenBench(c *consortium.Consortium, dir string) (*ledger.Ledger, error) {
	cfg := ledger.DefaultConfig(dir)
	cfg.Genesis, cfg.NodeSigner, cfg.SyncWrites = c.Genesis, c.NodeSigner, false
	cfg.Logger = slog.New(slog.DiscardHandler)
	return ledger.Open(context.Background(), cfg)
}

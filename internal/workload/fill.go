package workload

import (
	"context"
	"fmt"
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

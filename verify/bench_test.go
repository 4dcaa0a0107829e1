package verify_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/internal/workload"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/verify"
)

// BenchmarkVerifyAll1M verifies a 1M-entry Ed25519 log end to end, as
// verify --all and gpuledgerd check do (streamed from the store, signatures
// on all cores, root, registry and chains rebuilt), and reports entries/s
// beside the raw parallel verify rate of samples of the same entries,
// measured between chunks, and the peak heap while verifying against the
// peak while merely reading (the verifier keeps per-serial heads, nothing
// per entry).
func BenchmarkVerifyAll1M(b *testing.B) {
	const n = 1_000_000
	c, err := consortium.Build(consortium.DevWith(keys.Ed25519), consortium.Options{Rand: rand.NewChaCha8([32]byte{11})})
	if err != nil {
		b.Fatal(err)
	}
	dir := workload.BenchDir(c, "verify-1M")
	l, err := workload.OpenBench(c, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if l.Size() < n {
		b.Logf("building a %d-entry ledger in %s (once)", n, dir)
		if err := workload.Fill(context.Background(), l, c, "VA", n, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nil); err != nil {
			b.Fatal(err)
		}
	}
	v, err := verify.New(c.Genesis)
	if err != nil {
		b.Fatal(err)
	}
	// The peak heap while only reading the entries, to compare with the peak
	// while verifying them: the difference is the verifier's own memory.
	readPeak := peakHeap(func() {
		l.Entries(context.Background(), 0, l.Size(), func(*pb.Entry) error { return nil })
	})
	// The log is verified in chunks of 62,500 entries; after each, the raw
	// parallel verify rate is measured on 4,096 of that chunk's entries, so
	// that the machine's drift hits both alike.
	const chunk, sampleSize = 62_500, 4_096
	var rep *verify.AllReport
	var verifyTime, rawTime time.Duration
	var sampled int
	var verifyPeak uint64
	for b.Loop() {
		verifyTime, rawTime, sampled = 0, 0, 0
		verifyPeak = peakHeap(func() {
			s := v.NewStream()
			defer s.Close()
			for start := uint64(0); start < l.Size(); start += chunk {
				var sample [][]byte
				t0 := time.Now()
				err := l.Entries(context.Background(), start, start+chunk, func(e *pb.Entry) error {
					if len(sample) < sampleSize {
						sample = append(sample, e.GetEnvelope())
					}
					return s.Add(e)
				})
				s.Wait()
				verifyTime += time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				base := workload.NewBaseline(c, sample)
				rawTime += base.Run()
				sampled += len(sample)
			}
			rep, err = s.Finish()
		})
		if err != nil || !rep.OK() || rep.Root != l.Root() {
			b.Fatalf("verify: %v, %v", rep.Failures, err)
		}
	}
	rate := float64(rep.Entries) / verifyTime.Seconds()
	raw := float64(sampled) / rawTime.Seconds()
	b.ReportMetric(rate, "entries/s")
	b.ReportMetric(raw, "raw-verify/s")
	b.ReportMetric(rate/raw, "ratio-to-raw")
	b.ReportMetric(float64(readPeak)/(1<<20), "peak-heap-reading-MiB")
	b.ReportMetric(float64(verifyPeak)/(1<<20), "peak-heap-verifying-MiB")
	b.ReportMetric(float64(rep.Serials), "serials")
	b.ReportMetric(float64(rep.Entries), "entries")
}

// peakHeap runs f and samples the heap in use every 20ms, returning the peak.
func peakHeap(f func()) uint64 {
	runtime.GC()
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var max uint64
		var ms runtime.MemStats
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > max {
				max = ms.HeapInuse
			}
			select {
			case <-done:
				peak <- max
				return
			case <-t.C:
			}
		}
	}()
	f()
	close(done)
	return <-peak
}

package ledger_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/ledger"
)

// benchSchemes are the key set kinds benchmarked: every member of the
// consortium signs with that kind.
var benchSchemes = []struct {
	name    string
	schemes []keys.Scheme
}{
	{"Ed25519", []keys.Scheme{keys.Ed25519}},
	{"ML-DSA-65", []keys.Scheme{keys.MLDSA65}},
	{"hybrid", []keys.Scheme{keys.Ed25519, keys.MLDSA65}},
	// The development consortium as it is: the datacentres sign hybrid, the
	// rest Ed25519, so that Ed25519 and ML-DSA-65 calls alternate on each
	// core (what an ML-DSA-65 call leaves in the vector registers then
	// weighs on the SHA-256 and Ed25519 code that follows; crypto/keys).
	{"mixed", nil},
}

var benchConsortia sync.Map // name -> *consortium.Consortium

func benchConsortium(b *testing.B, name string, schemes []keys.Scheme) *consortium.Consortium {
	if c, ok := benchConsortia.Load(name); ok {
		return c.(*consortium.Consortium)
	}
	specs := consortium.Dev()
	if schemes != nil {
		specs = consortium.DevWith(schemes...)
	}
	c, err := consortium.Build(specs, consortium.Options{Rand: rand.NewChaCha8([32]byte{byte(len(name))})})
	if err != nil {
		b.Fatal(err)
	}
	benchConsortia.Store(name, c)
	return c
}

// ingestBench applies durable batches of fresh records, and after each batch
// verifies the same batch's signatures raw. This machine's speed drifts by
// ±20% from one second to the next, so the baseline is interleaved with the
// work it is compared to: ratio-to-raw = raw verify time / ingest time over
// the same records.
func ingestBench(b *testing.B, c *consortium.Consortium, prefix string, durable, pipelined bool) {
	const batch = 256
	pool := workload.New(c, 2, t0).Records(prefix, 40*batch)
	pool = pool[:len(pool)/batch*batch]
	baselines := make([]*workload.Baseline, len(pool)/batch)
	for i := range baselines {
		baselines[i] = workload.NewBaseline(c, pool[i*batch:(i+1)*batch])
	}
	open := func() *ledger.Ledger {
		cfg := ledger.DefaultConfig(b.TempDir())
		cfg.Genesis, cfg.NodeSigner, cfg.SyncWrites = c.Genesis, c.NodeSigner, durable
		cfg.Logger = slog.New(slog.DiscardHandler)
		l, err := ledger.Open(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	l := open()
	at := t0.Add(365 * 24 * time.Hour)
	next, records := 0, 0
	var work, raw time.Duration
	for b.Loop() {
		if next == len(pool) { // fresh records only: start a new store
			b.StopTimer()
			l.Close()
			l, next = open(), 0
			b.StartTimer()
		}
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if n := next + batch; pipelined && n < len(pool) {
				l.Preverify(pool[n : n+batch])
			}
		}()
		rs, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: pool[next : next+batch]})
		if err != nil || rs[0].Err != nil || rs[batch-1].Err != nil {
			b.Fatalf("Apply: %v %v", err, rs[0].Err)
		}
		<-done
		work += time.Since(start)
		b.StopTimer()
		raw += baselines[next/batch].Run()
		b.StartTimer()
		next += batch
		records += batch
	}
	b.ReportMetric(float64(records)/work.Seconds(), "records/s")
	b.ReportMetric(float64(records)/raw.Seconds(), "raw-verify-records/s")
	b.ReportMetric(raw.Seconds()/work.Seconds(), "ratio-to-raw")
	l.Close()
}

// BenchmarkVerifyParallel is the machine's raw parallel verify rate: the
// baseline every throughput target is a ratio of.
func BenchmarkVerifyParallel(b *testing.B) {
	for _, s := range benchSchemes {
		b.Run(s.name, func(b *testing.B) {
			c := benchConsortium(b, s.name, s.schemes)
			envs := workload.New(c, 1, t0).Records("VP", 512)
			base := workload.NewBaseline(c, envs)
			var next atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if !base.Verify(int(next.Add(1))) {
						b.Error("bad signature")
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/base.SignaturesPerRecord(), "records/s")
		})
	}
}

// BenchmarkApply applies durable batches of 256 fresh records, each batch
// decoded and verified inside Apply, and reports records/s beside the raw
// parallel verify rate of the same records measured in the same run.
func BenchmarkApply(b *testing.B) {
	for _, s := range benchSchemes {
		b.Run(s.name, func(b *testing.B) {
			ingestBench(b, benchConsortium(b, s.name, s.schemes), "AP", true, false)
		})
	}
}

// BenchmarkIngest is the ledger's steady-state ingest path: the next batch is
// preverified while the current one is applied (as a node does: verify before
// sequencing, apply after), both inside the timed work, durable batches of 256.
func BenchmarkIngest(b *testing.B) {
	for _, s := range benchSchemes {
		b.Run(s.name, func(b *testing.B) {
			ingestBench(b, benchConsortium(b, s.name, s.schemes), "IN", true, true)
		})
	}
}

// bigLedger returns a ledger of n entries signed with Ed25519 only, built once and kept in the
// temporary directory for later runs (the consortium's keys are fixed, so the
// store is the same every time), and the mean envelope size.
func bigLedger(b *testing.B, n int) (*ledger.Ledger, string) {
	c := benchConsortium(b, "Ed25519", []keys.Scheme{keys.Ed25519})
	dir := workload.BenchDir(c, fmt.Sprint(n))
	l, err := workload.OpenBench(c, dir)
	if err != nil {
		b.Fatal(err)
	}
	if l.Size() >= uint64(n) {
		return l, dir
	}
	if l.Size() != 0 {
		l.Close()
		os.RemoveAll(dir)
		return bigLedger(b, n)
	}
	b.Logf("building a %d-entry ledger in %s (once)", n, dir)
	start := time.Now()
	batches := make(chan [][]byte, 8)
	const producers, perBatch = 2, 1000
	var made atomic.Int64
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			g := workload.New(c, uint64(p), t0)
			var buf [][]byte
			for i := 0; made.Load() < int64(n); i++ {
				life := g.Lifecycle(fmt.Sprintf("BIG%d-%07d", p, i), 2)
				if len(buf)+len(life) > perBatch {
					batches <- buf
					buf = nil
				}
				buf = append(buf, life...)
				made.Add(int64(len(life)))
			}
			batches <- buf
		})
	}
	go func() { wg.Wait(); close(batches) }()
	at := t0.Add(365 * 24 * time.Hour)
	for envs := range batches {
		if _, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: envs}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("built %d entries in %v", l.Size(), time.Since(start).Round(time.Second))
	return l, dir
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkInclusionProof proves random entries of a 1M-entry log against
// its full size and reports p50/p99 latency.
func BenchmarkInclusionProof(b *testing.B) {
	l, _ := bigLedger(b, 1_000_000)
	defer l.Close()
	size := l.Size()
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := l.InclusionProof(context.Background(), rng.Uint64N(size), size); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(size), "entries")
}

// BenchmarkConsistencyProof proves random older sizes of the 1M-entry log.
func BenchmarkConsistencyProof(b *testing.B) {
	l, _ := bigLedger(b, 1_000_000)
	defer l.Close()
	size := l.Size()
	rng := rand.New(rand.NewPCG(3, 4))
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := l.ConsistencyProof(context.Background(), 1+rng.Uint64N(size-1), size); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
}

// BenchmarkStoredBytes reports the on-disk bytes per entry of the 1M-entry
// Ed25519 log (after badger flushes and compacts) against the mean envelope.
func BenchmarkStoredBytes(b *testing.B) {
	l, dir := bigLedger(b, 1_000_000)
	size := l.Size()
	var envBytes int64
	step := size / 2000
	for i := uint64(0); i < size; i += step {
		e, err := l.Entry(context.Background(), i)
		if err != nil {
			b.Fatal(err)
		}
		envBytes += int64(len(e.GetEnvelope()))
	}
	meanEnv := float64(envBytes) / float64((size+step-1)/step)
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	var disk int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			disk += fi.Sys().(*syscall.Stat_t).Blocks * 512 // allocated, not apparent, size
		}
		return nil
	})
	for b.Loop() {
	}
	perEntry := float64(disk) / float64(size)
	b.ReportMetric(perEntry, "stored-B/entry")
	b.ReportMetric(meanEnv, "envelope-B")
	b.ReportMetric(perEntry/meanEnv, "ratio")
}

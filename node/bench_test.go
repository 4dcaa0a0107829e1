package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

func benchConsortium(b *testing.B, schemes ...keys.Scheme) *consortium.Consortium {
	c, err := consortium.Build(consortium.DevWith(schemes...), consortium.Options{Rand: rand.NewChaCha8([32]byte{byte(len(schemes)), byte(schemes[0])})})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkAppendLoad is the load generator: concurrent clients over
// loopback gRPC submit pre-signed records to a node in the same process,
// with AppendBatch (batches of 100) or unary Append. It reports appends/s,
// per-call p50/p99 latency, the raw parallel verify rate of the same records
// measured before and after the load (mean), their ratio, and the CPU the
// whole process (node and load generator together) spent per record.
func BenchmarkAppendLoad(b *testing.B) {
	for _, sc := range []struct {
		name    string
		schemes []keys.Scheme
	}{{"Ed25519", []keys.Scheme{keys.Ed25519}}, {"ML-DSA-65", []keys.Scheme{keys.MLDSA65}}} {
		c := benchConsortium(b, sc.schemes...)
		for _, mode := range []struct {
			name    string
			batch   int
			clients int
		}{{"AppendBatch", 100, 16}, {"Append", 1, 128}} {
			b.Run(sc.name+"/"+mode.name, func(b *testing.B) {
				const total = 12000
				gen := workload.New(c, 7, time.Now().Add(-7*24*time.Hour))
				gen.Step = time.Second
				records := gen.Records("LOAD", total)
				base := workload.NewBaseline(c, records)
				rawBefore := base.Rate()
				tn := benchNodeWith(b, c)
				// Each client takes whole lifecycles (8 records) in order.
				lifes := slices.Collect(slices.Chunk(records, 8))
				var next atomic.Int64
				var mu sync.Mutex
				var lat []time.Duration
				var done atomic.Int64
				cpu0 := cpuSeconds()
				start := time.Now()
				b.ResetTimer()
				var wg sync.WaitGroup
				for range mode.clients {
					wg.Go(func() {
						var pending [][]byte
						flush := func() {
							if len(pending) == 0 {
								return
							}
							req := &pb.AppendBatchRequest{}
							for _, raw := range pending {
								env := new(pb.Envelope)
								proto.Unmarshal(raw, env)
								req.Envelopes = append(req.Envelopes, env)
							}
							t0 := time.Now()
							var err error
							if mode.batch == 1 {
								_, err = tn.lc.Append(context.Background(), &pb.AppendRequest{Envelope: req.Envelopes[0]})
							} else {
								var r *pb.AppendBatchResponse
								r, err = tn.lc.AppendBatch(context.Background(), req)
								for _, res := range r.GetResults() {
									if res.GetError() != nil {
										b.Errorf("rejected: %v", res.GetError())
									}
								}
							}
							d := time.Since(t0)
							if err != nil {
								b.Error(err)
							}
							mu.Lock()
							lat = append(lat, d)
							mu.Unlock()
							done.Add(int64(len(pending)))
							pending = pending[:0]
						}
						for i := next.Add(1) - 1; i < int64(len(lifes)); i = next.Add(1) - 1 {
							for _, raw := range lifes[i] {
								pending = append(pending, raw)
								if mode.batch == 1 || len(pending) == mode.batch {
									flush()
								}
							}
							if mode.batch > 1 && len(pending)+8 > mode.batch {
								flush()
							}
						}
						flush()
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				cpu := cpuSeconds() - cpu0
				b.StopTimer()
				raw := (rawBefore + base.Rate()) / 2
				rate := float64(done.Load()) / elapsed.Seconds()
				slices.Sort(lat)
				b.ReportMetric(rate, "appends/s")
				b.ReportMetric(raw, "raw-verify/s")
				b.ReportMetric(rate/raw, "ratio-to-raw")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(cpu/elapsed.Seconds(), "cores-used")
				b.ReportMetric(cpu*1e6/float64(done.Load()), "cpu-µs/record")
			})
		}
	}
}

// benchNodeWith starts a node of consortium c in a fresh directory.
func benchNodeWith(b *testing.B, c *consortium.Consortium) *testNode {
	saved := dev
	dev = c
	defer func() { dev = saved }()
	return startNodeB(b, b.TempDir())
}

// BenchmarkReads1M reads serials and their histories from a node whose ledger
// holds 1M entries (built once, directly through ledger.Apply, and kept in
// the temporary directory), and reports p99 latencies and the peak RSS.
func BenchmarkReads1M(b *testing.B) {
	c := benchConsortium(b, keys.Ed25519)
	dir := workload.BenchDir(c, "node-1M")
	const n = 1_000_000
	serials := buildBig(b, c, dir, n)
	saved := dev
	dev = c
	tn := startNodeB(b, dir)
	dev = saved
	rng := rand.New(rand.NewPCG(1, 1))
	measure := func(name string, call func(serial string) error) {
		var lat []time.Duration
		for range 2000 {
			s := serials[rng.IntN(len(serials))]
			t0 := time.Now()
			if err := call(s); err != nil {
				b.Fatalf("%s(%s): %v", name, s, err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, name+"-p99-ms")
	}
	for b.Loop() {
		measure("GetSerial", func(s string) error {
			_, err := tn.lc.GetSerial(context.Background(), &pb.GetSerialRequest{Serial: s})
			return err
		})
		measure("ListSerialEvents", func(s string) error {
			_, err := tn.lc.ListSerialEvents(context.Background(), &pb.ListSerialEventsRequest{Serial: s})
			return err
		})
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(tn.n.Ledger().Size()), "entries")
}

// buildBig fills dir/ledger with n entries through ledger.Apply (once) and
// returns some of its serials.
func buildBig(b *testing.B, c *consortium.Consortium, dir string, n int) []string {
	l, err := workload.OpenBench(c, filepath.Join(dir, "ledger"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var serials []string
	for i := range 1000 {
		serials = append(serials, fmt.Sprintf("BIG-%07d", i*97))
	}
	if l.Size() >= uint64(n) {
		return serials
	}
	b.Logf("building a %d-entry ledger in %s (once)", n, dir)
	if err := workload.Fill(context.Background(), l, c, "BIG", n, time.Now().Add(-30*24*time.Hour), nil); err != nil {
		b.Fatal(err)
	}
	return serials
}

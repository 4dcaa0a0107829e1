package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
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
	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// benchConsortium builds the development consortium with every member
// signing with schemes, or with none given as it is (the datacentres
// hybrid, the rest Ed25519).
func benchConsortium(b *testing.B, schemes ...keys.Scheme) *consortium.Consortium {
	specs, seed := consortium.Dev(), [32]byte{9}
	if len(schemes) > 0 {
		specs, seed = consortium.DevWith(schemes...), [32]byte{byte(len(schemes)), byte(schemes[0])}
	}
	c, err := consortium.Build(specs, consortium.Options{Rand: rand.NewChaCha8(seed)})
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
	}{{"Ed25519", []keys.Scheme{keys.Ed25519}}, {"ML-DSA-65", []keys.Scheme{keys.MLDSA65}},
		{"hybrid", []keys.Scheme{keys.Ed25519, keys.MLDSA65}}, {"mixed", nil}} {
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
				cpu0 := cpuSeconds()
				b.ResetTimer()
				rate, lat, elapsed := runLoad(b, tn.lc, records, mode.batch, mode.clients)
				cpu := cpuSeconds() - cpu0
				b.StopTimer()
				raw := (rawBefore + base.Rate()) / 2
				b.ReportMetric(rate, "appends/s")
				b.ReportMetric(raw, "raw-verify/s")
				b.ReportMetric(rate/raw, "ratio-to-raw")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(cpu/elapsed.Seconds(), "cores-used")
				b.ReportMetric(cpu*1e6/float64(len(records)), "cpu-µs/record")
			})
		}
	}
}

// runLoad submits records to lc from concurrent clients, each taking whole
// lifecycles (8 records) in order, with AppendBatch of up to batch records
// (or unary Append when batch is 1). It returns appends/s, the sorted
// per-call latencies and the elapsed time.
func runLoad(b *testing.B, lc gpuledgerv1grpc.LedgerServiceClient, records [][]byte, batch, clients int) (float64, []time.Duration, time.Duration) {
	lifes := slices.Collect(slices.Chunk(records, 8))
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var done atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
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
				if batch == 1 {
					_, err = lc.Append(context.Background(), &pb.AppendRequest{Envelope: req.Envelopes[0]})
				} else {
					var r *pb.AppendBatchResponse
					r, err = lc.AppendBatch(context.Background(), req)
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
					if batch == 1 || len(pending) == batch {
						flush()
					}
				}
				if batch > 1 && len(pending)+8 > batch {
					flush()
				}
			}
			flush()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	return float64(done.Load()) / elapsed.Seconds(), lat, elapsed
}

// BenchmarkCluster compares a cluster of three nodes with one node, in the
// same run and on the same machine: every node (and the load generator)
// runs in this process, raft over TCP on loopback, so the three nodes share
// the machine's cores, each verifying every signature and writing its own
// store. The same records go to the leader by unary Append (128 clients;
// a call's latency is its commit latency) and by AppendBatch (16 clients of
// 100). Reported: appends/s of each, their ratio, and commit latency p50/p99.
func BenchmarkCluster(b *testing.B) {
	c, err := consortium.Build(consortium.DevWith(keys.Ed25519), consortium.Options{Rand: rand.NewChaCha8([32]byte{3}),
		MoreNodes: []consortium.NodeSpec{{Name: "node-2", Operator: "acme-gpu"}, {Name: "node-3", Operator: "eu-dist"}}})
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name           string
		batch, clients int
	}{{"Append", 1, 128}, {"AppendBatch", 100, 16}} {
		b.Run(mode.name, func(b *testing.B) {
			const total = 12000
			gen := workload.New(c, 11, time.Now().Add(-7*24*time.Hour))
			gen.Step = time.Second
			records := gen.Records("CLU", total)
			var rates [2]float64
			for i, size := range []int{1, 3} {
				lc := startCluster(b, c, size)
				if i == 0 {
					b.ResetTimer()
				}
				rate, lat, _ := runLoad(b, lc, records, mode.batch, mode.clients)
				rates[i] = rate
				name := fmt.Sprintf("%d-node", size)
				b.ReportMetric(rate, name+"-appends/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, name+"-p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, name+"-p99-ms")
			}
			b.ReportMetric(rates[1]/rates[0], "ratio-3-to-1")
		})
	}
}

// serveOn opens a node with cfg (its Listener set) and serves its gRPC
// until the test ends.
func serveOn(tb testing.TB, cfg node.Config) *node.Node {
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := node.Open(tb.Context(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer(node.ServerOptions()...)
	n.Register(s)
	go s.Serve(n.GRPCListener())
	tb.Cleanup(func() {
		s.Stop()
		n.Close(context.Background())
	})
	return n
}

// startCluster starts size nodes of c (c.Nodes[:size]) in this process, each
// on its own loopback address and directory, founds a cluster of them and
// returns a client of its leader once elected.
func startCluster(b *testing.B, c *consortium.Consortium, size int) gpuledgerv1grpc.LedgerServiceClient {
	var lis []net.Listener
	var peers []node.Peer
	for i := range size {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		lis = append(lis, l)
		peers = append(peers, node.Peer{Name: c.Nodes[i].Name, Addr: l.Addr().String()})
	}
	var nodes []*node.Node
	for i := range size {
		cfg := node.DefaultConfig(c.Nodes[i].Name, b.TempDir())
		cfg.Genesis, cfg.NodeSigner, cfg.Listener, cfg.Peers = c.Genesis, c.Nodes[i].Signer, lis[i], peers
		nodes = append(nodes, serveOn(b, cfg))
	}
	deadline := time.Now().Add(20 * time.Second)
	var leader string
	for leader == "" {
		for i, n := range nodes {
			if n.IsLeader() {
				leader = peers[i].Addr
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("no leader elected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.NewClient(leader, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return gpuledgerv1grpc.NewLedgerServiceClient(conn)
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

// BenchmarkWatchers measures what open WatchFindings streams cost writers:
// write throughput (AppendBatch of 100, 16 clients, 12,000 Ed25519 records a
// round) with no stream open and with 500 open (on 4 connections), rounds
// interleaved on one node. Reported: appends/s of each and their ratio
// (target ≥ 0.8).
func BenchmarkWatchers(b *testing.B) {
	c := benchConsortium(b, keys.Ed25519)
	saved := dev
	dev = c
	tn := startNodeWith(b, b.TempDir(), func(cfg *node.Config) { cfg.MaxWatchStreams, cfg.MaxWatchStreamsPerClient = 1000, 0 })
	dev = saved
	gen := workload.New(c, 11, time.Now().Add(-7*24*time.Hour))
	gen.Step = time.Second
	round := 0
	load := func() float64 {
		round++
		records := gen.Records(fmt.Sprintf("W%d", round), 12000)
		rate, _, _ := runLoad(b, tn.lc, records, 100, 16)
		return rate
	}
	watch := func(n int) (stop func(), received *atomic.Int64) {
		ctx, cancel := context.WithCancel(context.Background())
		received = new(atomic.Int64)
		var wg sync.WaitGroup
		for range 4 {
			conn, err := grpc.NewClient(tn.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			ac := gpuledgerv1grpc.NewAuditServiceClient(conn)
			for range n / 4 {
				s, err := ac.WatchFindings(ctx, &pb.WatchFindingsRequest{})
				if err != nil {
					b.Fatal(err)
				}
				wg.Go(func() {
					for {
						if _, err := s.Recv(); err != nil {
							return
						}
						received.Add(1)
					}
				})
			}
			b.Cleanup(func() { conn.Close() })
		}
		time.Sleep(500 * time.Millisecond) // every stream subscribed
		return func() { cancel(); wg.Wait() }, received
	}
	var base, with []float64
	for range max(b.N, 2) {
		base = append(base, load())
		stop, _ := watch(500)
		with = append(with, load())
		stop()
	}
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	b.ReportMetric(mean(base), "appends/s-no-watchers")
	b.ReportMetric(mean(with), "appends/s-500-watchers")
	b.ReportMetric(mean(with)/mean(base), "ratio")
}

package ledger_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkDetectorCost applies the same durable batches of 256 Ed25519
// records to two stores, one with the detectors (findings tables,
// IMPOSSIBLE_TRAVEL) and one without, alternating batch by batch so that the
// machine's drift hits both alike, and reports the detectors' share of
// Apply's time.
func BenchmarkDetectorCost(b *testing.B) {
	const batch = 256
	c := benchConsortium(b, "Ed25519", []keys.Scheme{keys.Ed25519})
	pool := workload.New(c, 9, t0).Records("DC", 40*batch)
	pool = pool[:len(pool)/batch*batch]
	open := func(off bool) *ledger.Ledger {
		cfg := ledger.DefaultConfig(b.TempDir())
		cfg.Genesis, cfg.NodeSigner, cfg.NoDetectors = c.Genesis, c.NodeSigner, off
		cfg.Logger = slog.New(slog.DiscardHandler)
		l, err := ledger.Open(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	on, off := open(false), open(true)
	var tOn, tOff time.Duration
	next, records := 0, 0
	at := t0.Add(365 * 24 * time.Hour)
	for b.Loop() {
		if next == len(pool) {
			b.StopTimer()
			on.Close()
			off.Close()
			on, off, next = open(false), open(true), 0
			b.StartTimer()
		}
		dOn, dOff := applyBoth(b, on, off, pool[next:next+batch], at, (next/batch)%2 == 0)
		tOn, tOff = tOn+dOn, tOff+dOff
		next += batch
		records += batch
	}
	b.ReportMetric(float64(records)/tOn.Seconds(), "records/s-detectors-on")
	b.ReportMetric(float64(records)/tOff.Seconds(), "records/s-detectors-off")
	b.ReportMetric(100*(1-tOff.Seconds()/tOn.Seconds()), "detector-cost-%")
	on.Close()
	off.Close()
}

// findingsLedger returns a ledger of 1,000,000 serials with 5 entries each
// (manufactured, shipped, received, shipped, received), 5% received by the
// wrong party and 5% never received, built once and kept in the temporary
// directory.
func findingsLedger(b *testing.B) (*ledger.Ledger, time.Time) {
	const serials = 1_000_000
	c := benchConsortium(b, "Ed25519", []keys.Scheme{keys.Ed25519})
	dir := workload.BenchDir(c, "findings-1M-v2")
	l, err := workload.OpenBench(c, dir)
	if err != nil {
		b.Fatal(err)
	}
	start := t0
	asOf := start.Add(200 * 24 * time.Hour)
	if l.Size() >= 5*serials {
		return l, asOf
	}
	if l.Size() != 0 {
		b.Fatalf("%s holds a partial build; remove it", dir)
	}
	b.Logf("building 1M serials (5M entries) in %s (once)", dir)
	began := time.Now()
	member := func(id string) *consortium.Member { return c.Member(id) }
	sign := func(m *consortium.Member, ev *pb.CustodyEvent) []byte { return m.SignEvent(ev) }
	loc := func(id string) *pb.Location {
		s := member(id).Participant.GetSites()[0]
		return &pb.Location{Country: s.GetCountry(), SiteId: s.GetId(), LatitudeE6: s.LatitudeE6, LongitudeE6: s.LongitudeE6}
	}
	life := func(i int, rng *rand.Rand) [][]byte {
		serial := fmt.Sprintf("F-%07d", i)
		t := start.Add(time.Duration(i) * 10 * time.Second)
		var out [][]byte
		var prev []byte
		add := func(actor, cp string, typ pb.EventType, at time.Time) {
			ev := &pb.CustodyEvent{Serial: serial, Type: typ, Actor: actor, Counterparty: cp, Location: loc(actor), OccurredAt: timestamppb.New(at), PrevEventHash: prev}
			if typ == pb.EventType_EVENT_TYPE_MANUFACTURED {
				ev.Model = "H100"
			}
			env := sign(member(actor), ev)
			h := sha256.Sum256(env)
			prev = h[:]
			out = append(out, env)
		}
		add("acme-gpu", "", pb.EventType_EVENT_TYPE_MANUFACTURED, t)
		add("acme-gpu", "eu-dist", pb.EventType_EVENT_TYPE_SHIPPED, t.Add(time.Hour))
		receiver := "eu-dist"
		if rng.IntN(20) == 0 {
			receiver = "us-dist" // RECEIVER_MISMATCH
		}
		add(receiver, "acme-gpu", pb.EventType_EVENT_TYPE_RECEIVED, t.Add(3*24*time.Hour))
		add(receiver, "dc-frankfurt", pb.EventType_EVENT_TYPE_SHIPPED, t.Add(4*24*time.Hour))
		if rng.IntN(20) != 0 { // else never received: HANDOFF_UNCONFIRMED
			add("dc-frankfurt", receiver, pb.EventType_EVENT_TYPE_RECEIVED, t.Add(6*24*time.Hour))
		}
		return out
	}
	batches := make(chan [][]byte, 4)
	var wg sync.WaitGroup
	const workers = 2
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var buf [][]byte
			for i := w; i < serials; i += workers {
				buf = append(buf, life(i, rng)...)
				if len(buf) >= 995 {
					batches <- buf
					buf = nil
				}
			}
			batches <- buf
		})
	}
	go func() { wg.Wait(); close(batches) }()
	at := asOf
	for envs := range batches {
		l.Preverify(envs)
		rs, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: envs})
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range rs {
			if r.Err != nil {
				b.Fatalf("building: %v", r.Err)
			}
		}
	}
	b.Logf("built %d entries in %v", l.Size(), time.Since(began).Round(time.Second))
	return l, asOf
}

// BenchmarkListFindings1M pages through one kind's findings, 100 at a time,
// over 1M serials: a stored kind (RECEIVER_MISMATCH) and a time-based one
// (HANDOFF_UNCONFIRMED), each judged as of a date after every window ran out
// ("end"), as of the middle of the history, when about half the findings had
// arisen ("mid"), and as of its first days, when almost none had ("early").
func BenchmarkListFindings1M(b *testing.B) {
	l, end := findingsLedger(b)
	defer l.Close()
	for _, k := range []pb.FindingKind{pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH, pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED} {
		for _, when := range []struct {
			name string
			asOf time.Time
		}{{"end", end}, {"mid", t0.Add(80 * 24 * time.Hour)}, {"early", t0.Add(30 * 24 * time.Hour)}} {
			b.Run(gaps.Name(k)+"/as-of-"+when.name, func(b *testing.B) {
				var lat []time.Duration
				var after []byte
				pages, total := 0, 0
				for b.Loop() {
					start := time.Now()
					fs, next, err := l.Findings(context.Background(), ledger.FindingQuery{Filter: gaps.Filter{Kinds: []pb.FindingKind{k}}, AsOf: when.asOf, After: after, Limit: 100})
					if err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
					if len(fs) == 0 {
						b.Fatal("no findings")
					}
					pages++
					total += len(fs)
					after = next // walk the whole list, starting over at its end
				}
				b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(total)/float64(pages), "findings/page")
			})
		}
	}
}

// BenchmarkMapCost is BenchmarkDetectorCost for the serial map: the same
// durable batches of 256 Ed25519 records to two stores, one keeping the map
// and one not, alternating batch by batch, on stores that already hold
// prefill serials (the map's depth, and its cost, grow with the log2 of
// the serials). Reported: the map's share of Apply's time (with the share
// of a snapshot of the top levels that the loop's updates incur), its
// stored bytes per serial, proof times, the snapshot's time, and Open's:
// after a crash (replaying the loop's journal), after a clean stop, and
// without the snapshot file (rebuilding the top levels from the states).
func BenchmarkMapCost(b *testing.B) {
	sizes := []int{0, 100_000}
	if os.Getenv("GPULEDGER_BENCH_MAP_1M") != "" {
		sizes = append(sizes, 1_000_000)
	}
	for _, prefill := range sizes {
		b.Run(fmt.Sprintf("prefill-%d", prefill), func(b *testing.B) {
			const batch = 256
			c := benchConsortium(b, "Ed25519", []keys.Scheme{keys.Ed25519})
			pool := workload.New(c, 9, t0).Records("MC", 160*batch)
			pool = pool[:len(pool)/batch*batch]
			at := t0.Add(365 * 24 * time.Hour)
			manufactured := manufactures(c, prefill)
			at0 := at
			reopen := func(dir string, off bool) *ledger.Ledger {
				cfg := ledger.DefaultConfig(dir)
				cfg.Genesis, cfg.NodeSigner, cfg.NoSerialMap = c.Genesis, c.NodeSigner, off
				cfg.Logger = slog.New(slog.DiscardHandler)
				l, err := ledger.Open(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				return l
			}
			onDir := b.TempDir()
			on, off := reopen(onDir, false), reopen(b.TempDir(), true)
			prefillSerials(b, on, manufactured, at0)
			prefillSerials(b, off, manufactured, at0)
			// The top levels' snapshot: none in the loop (the journal starts
			// empty and the loop's updates are fewer than a snapshot waits
			// for); one after it, timed, its cost shared over the updates
			// between two snapshots and added to the loop's time for each
			// update the loop journaled.
			if err := ledger.SnapshotMap(on); err != nil {
				b.Fatal(err)
			}
			var tOn, tOff time.Duration
			next := 0
			for b.Loop() {
				if next == len(pool) {
					b.Fatal("ran out of records: use -benchtime 160x or less")
				}
				dOn, dOff := applyBoth(b, on, off, pool[next:next+batch], at, (next/batch)%2 == 0)
				tOn, tOff = tOn+dOn, tOff+dOff
				next += batch
			}
			journaled, every := ledger.MapJournal(on)
			if journaled < b.N {
				b.Fatalf("%d updates journaled for %d batches: a snapshot ran in the loop, so the accounting below would count it twice", journaled, b.N)
			}
			// A crash now: the next Open replays the loop's journal.
			if err := ledger.Crash(on); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			on = reopen(onDir, false)
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "open-after-crash-ms")
			b.ReportMetric(float64(journaled), "journal-replayed")
			if j, _ := ledger.MapJournal(on); j != journaled {
				b.Fatalf("the reopened store counts %d journaled updates, not %d", j, journaled)
			}
			start = time.Now()
			if err := ledger.SnapshotMap(on); err != nil {
				b.Fatal(err)
			}
			tSnap := time.Since(start)
			tOn += time.Duration(float64(tSnap) * float64(journaled) / float64(every))
			b.ReportMetric(float64(tSnap.Microseconds())/1000, "snapshot-ms")
			on.Close()
			start = time.Now()
			on = reopen(onDir, false)
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "open-ms")
			// Without the snapshot file (a restored backup): the top levels
			// rebuilt from every serial's state, and the file written again.
			on.Close()
			if err := os.Remove(filepath.Join(onDir, "serial-map-top")); err != nil {
				b.Fatal(err)
			}
			start = time.Now()
			on = reopen(onDir, false)
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "open-rebuild-ms")

			b.ReportMetric(float64(every), "updates/snapshot")
			// Proofs from the store, of serials spread over the map.
			var prove []time.Duration
			for i := range 2000 {
				serial := fmt.Sprintf("PF-%08d", (i*7919)%max(prefill, 1))
				t0 := time.Now()
				if _, err := on.ProveSerial(serial); err != nil {
					b.Fatal(err)
				}
				prove = append(prove, time.Since(t0))
			}
			slices.Sort(prove)
			b.ReportMetric(float64(prove[len(prove)*99/100].Microseconds()), "prove-p99-µs")
			leaves, bytes, err := on.MapStats(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(bytes)/float64(leaves), "map-B/serial")
			b.ReportMetric(float64(leaves), "map-leaves")
			b.ReportMetric((tOn-tOff).Seconds()/tOn.Seconds(), "map-share")
			b.ReportMetric(float64(b.N*batch)/tOn.Seconds(), "records/s-with-map")
			b.ReportMetric(float64(b.N*batch)/tOff.Seconds(), "records/s-without")
			on.Close()
			off.Close()
		})
	}
}

// manufactures returns n MANUFACTURED events of distinct serials, signed.
func manufactures(c *consortium.Consortium, n int) [][]byte {
	var maker *consortium.Member
	for _, m := range c.Members {
		if m.Participant.GetRole() == pb.Role_ROLE_MANUFACTURER {
			maker = m
			break
		}
	}
	out := make([][]byte, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				out[i] = maker.SignEvent(&pb.CustodyEvent{Serial: fmt.Sprintf("PF-%08d", i), Type: pb.EventType_EVENT_TYPE_MANUFACTURED,
					Actor: maker.Participant.GetId(), Model: "H100", Location: &pb.Location{Country: maker.Participant.GetCountry()}, OccurredAt: timestamppb.New(t0)})
			}
		})
	}
	wg.Wait()
	return out
}

// prefillSerials applies envs in batches of 1,000.
func prefillSerials(b *testing.B, l *ledger.Ledger, envs [][]byte, at time.Time) {
	for len(envs) > 0 {
		n := min(len(envs), 1000)
		l.Preverify(envs[:n])
		if _, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: envs[:n]}); err != nil {
			b.Fatal(err)
		}
		envs = envs[n:]
	}
}

// applyBoth applies envs to the stores on and off, on first when onFirst
// (callers alternate, so that the machine's drift hits both alike), and
// returns the time each took.
func applyBoth(b *testing.B, on, off *ledger.Ledger, envs [][]byte, at time.Time, onFirst bool) (time.Duration, time.Duration) {
	timed := func(l *ledger.Ledger) time.Duration {
		start := time.Now()
		if _, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: envs}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	if onFirst {
		dOn := timed(on)
		return dOn, timed(off)
	}
	dOff := timed(off)
	return timed(on), dOff
}

package verify_test

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/verify"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// auditLedger is a store fed lifecycles of Ed25519 and hybrid participants
// in small batches (so that a serial's events span batches), with the log
// size after each batch.
func auditLedger(t *testing.T) (*consortium.Consortium, *ledger.Ledger, []uint64) {
	t.Helper()
	c, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{14})})
	if err != nil {
		t.Fatal(err)
	}
	l, err := workload.OpenBench(c, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := workload.New(c, 3, start)
	envs := g.Records("AUD", 600)
	at := g.Now().Add(workload.LifecycleSpan + time.Hour)
	var sizes []uint64
	for i := 0; len(envs) > 0; i++ {
		n := min(len(envs), 37)
		rs, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at.Add(time.Duration(i) * time.Second), Envelopes: envs[:n]})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		envs = envs[n:]
		sizes = append(sizes, l.Size())
	}
	// A registry change last: the registry leaf moves too.
	ch := c.Member("export-regulator").SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.New(at), Reason: "audit test",
		Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: "rack-integrator"}}})
	rs, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at.Add(time.Hour), Envelopes: [][]byte{ch}})
	if err != nil || rs[0].Err != nil {
		t.Fatalf("registry change: %v %v", err, rs[0].Err)
	}
	sizes = append(sizes, l.Size())
	return c, l, sizes
}

func entries(t *testing.T, l *ledger.Ledger, from, to uint64) []*pb.Entry {
	t.Helper()
	var out []*pb.Entry
	if err := l.Entries(context.Background(), from, to, func(e *pb.Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuditRebuildsMap: an auditor replaying the log (verify.Stream, with
// ledger.NextState) rebuilds the serial map the store kept batch by batch:
// in one run from entry 0, and resuming an audit store on disk at every
// batch's size (reopened between runs) — the same root at every size.
func TestAuditRebuildsMap(t *testing.T) {
	c, l, sizes := auditLedger(t)
	v, err := verify.New(c.Genesis)
	if err != nil {
		t.Fatal(err)
	}
	all := entries(t, l, 0, l.Size())
	i := 0
	rep, err := v.All(context.Background(), func() (*pb.Entry, error) {
		if i == len(all) {
			return nil, nil
		}
		i++
		return all[i-1], nil
	}, nil)
	want, _ := l.MapRoot(l.Size())
	if err != nil || !rep.OK() || rep.MapRoot == nil || *rep.MapRoot != want || rep.Root != l.Root() {
		t.Fatalf("All: %+v, %v; the store's map root %x", rep, err, want)
	}

	dir := filepath.Join(t.TempDir(), "audit")
	for k, size := range sizes {
		if k%3 == 1 {
			continue // some runs span several batches
		}
		store, err := ledger.OpenAuditStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		s, err := v.ResumeStream(store)
		if err != nil {
			t.Fatal(err)
		}
		from := s.Next()
		for _, e := range entries(t, l, from, size) {
			if err := s.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := s.Finish()
		if err != nil || !rep.OK() || rep.From != from {
			t.Fatalf("size %d: %+v, %v", size, rep, err)
		}
		root, err := s.Commit()
		want, _ := l.MapRoot(size)
		if err != nil || root != want {
			t.Fatalf("resumed from %d to %d: map root %x (%v), the store's %x", from, size, root, err, want)
		}
		s.Close()
		store.Close()
	}
}

// TestAuditCatchesMisreport: what a node adds beside an entry is checked
// against the rules, though not in its Merkle leaf: an entry served with
// its flags stripped fails the audit, naming the serial.
func TestAuditCatchesMisreport(t *testing.T) {
	c, l, _ := auditLedger(t)
	v, _ := verify.New(c.Genesis)
	all := entries(t, l, 0, l.Size())
	// A flag the node never gave, on an entry the rules give none.
	e := proto.Clone(all[3]).(*pb.Entry)
	e.Flags = append(e.Flags, &pb.Flag{Kind: pb.FindingKind_FINDING_KIND_IMPOSSIBLE_TRAVEL})
	all[3] = e
	s := v.NewStream()
	defer s.Close()
	for _, e := range all {
		if err := s.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.Finish()
	if err != nil || rep.OK() || rep.First() != 3 || !strings.Contains(rep.FirstProblem(), "flags") || !strings.Contains(rep.FirstProblem(), "AUD-") {
		t.Fatalf("a misreported flag: %+v, %v", rep.Failures, err)
	}
	if _, err := s.Commit(); err == nil {
		t.Fatal("a failed audit committed")
	}

	// A registry change whose envelope names payload_type twice, a custody
	// event's first: the auditor must not take it for an event and skip it.
	all = entries(t, l, 0, l.Size())
	last := proto.Clone(all[len(all)-1]).(*pb.Entry)
	last.Envelope = append(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "application/vnd.gpuledger.custody-event+proto"), last.GetEnvelope()...)
	all[len(all)-1] = last
	s2 := v.NewStream()
	defer s2.Close()
	for _, e := range all {
		if err := s2.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	rep, err = s2.Finish()
	if err != nil || rep.OK() || rep.First() != int64(last.GetIndex()) {
		t.Fatalf("a registry change disguised as an event: %+v, %v", rep.Failures, err)
	}
}

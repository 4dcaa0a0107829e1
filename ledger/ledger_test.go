package ledger_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// mixedBatches returns batches of valid lifecycles interleaved with garbage,
// duplicates, stale heads and forgeries, all from a fixed seed.
func mixedBatches(seed uint64, records int) [][][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	gen := workload.New(testConsortium, seed, t0)
	valid := gen.Records("MIX", records)
	forger := testConsortium.Member("eu-dist")
	var stream [][]byte
	for i, env := range valid {
		stream = append(stream, env)
		switch rng.IntN(8) {
		case 0:
			stream = append(stream, []byte{0x0a, byte(rng.IntN(256)), 0xff})
		case 1:
			stream = append(stream, valid[rng.IntN(i+1)]) // a replay
		case 2:
			stream = append(stream, testConsortium.Member("acme-gpu").SignEvent(&pb.CustodyEvent{
				Serial: fmt.Sprintf("MIX-%06d", rng.IntN(10)), Type: pb.EventType_EVENT_TYPE_SHIPPED, Actor: "acme-gpu",
				Counterparty: "eu-dist", Location: &pb.Location{Country: "TW"}, OccurredAt: timestamppb.New(t0),
				PrevEventHash: make([]byte, 32),
			}))
		case 3:
			stream = append(stream, forger.SignEvent(&pb.CustodyEvent{
				Serial: fmt.Sprintf("FORGED-%d", i), Type: pb.EventType_EVENT_TYPE_MANUFACTURED, Actor: "acme-gpu",
				Model: "X", Location: &pb.Location{Country: "TW"}, OccurredAt: timestamppb.New(t0),
			}))
		}
	}
	var batches [][][]byte
	for len(stream) > 0 {
		n := min(len(stream), 1+rng.IntN(64))
		batches = append(batches, stream[:n])
		stream = stream[n:]
	}
	return batches
}

func applyAll(t testing.TB, l *ledger.Ledger, batches [][][]byte) (accepted, rejected int) {
	t.Helper()
	at := t0.Add(365 * 24 * time.Hour)
	for i, b := range batches {
		rs, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at.Add(time.Duration(i) * time.Second), Envelopes: b, AppliedIndex: uint64(i + 1)})
		if err != nil {
			t.Fatalf("Apply batch %d: %v", i, err)
		}
		for _, r := range rs {
			if r.Err != nil {
				rejected++
			} else if !r.Duplicate {
				accepted++
			}
		}
	}
	return accepted, rejected
}

func allSerials(t testing.TB, l *ledger.Ledger) []*pb.SerialState {
	t.Helper()
	out, next, err := l.Serials(context.Background(), ledger.SerialFilter{}, "", 1<<30, 0)
	more := next != ""
	if err != nil || more {
		t.Fatalf("Serials = %v, more %v", err, more)
	}
	return out
}

func allEntries(t testing.TB, l *ledger.Ledger) []*pb.Entry {
	t.Helper()
	var out []*pb.Entry
	if err := l.Entries(context.Background(), 0, l.Size(), func(e *pb.Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeterminism(t *testing.T) {
	batches := mixedBatches(7, 600)
	a, b := newFixture(t), newFixture(t)
	accA, rejA := applyAll(t, a.l, batches)
	accB, rejB := applyAll(t, b.l, batches)
	if accA < 600 || rejA == 0 {
		t.Fatalf("workload accepted %d, rejected %d; want at least 600 accepted and some rejected", accA, rejA)
	}
	if accA != accB || rejA != rejB {
		t.Fatalf("stores disagree on outcomes: %d/%d vs %d/%d", accA, rejA, accB, rejB)
	}
	if a.l.Size() != b.l.Size() || a.l.Root() != b.l.Root() || a.l.AppliedIndex() != b.l.AppliedIndex() {
		t.Fatalf("size/root/applied differ: %d %x %d vs %d %x %d", a.l.Size(), a.l.Root(), a.l.AppliedIndex(), b.l.Size(), b.l.Root(), b.l.AppliedIndex())
	}
	ca, _ := a.l.Checkpoint(context.Background())
	cb, _ := b.l.Checkpoint(context.Background())
	if ca.GetNote() != cb.GetNote() {
		t.Errorf("checkpoints differ:\n%s\n%s", ca.GetNote(), cb.GetNote())
	}
	sa, sb := allSerials(t, a.l), allSerials(t, b.l)
	if len(sa) != len(sb) {
		t.Fatalf("serial counts differ: %d vs %d", len(sa), len(sb))
	}
	for i := range sa {
		if !proto.Equal(sa[i], sb[i]) {
			t.Fatalf("serial %s differs:\n%v\n%v", sa[i].GetSerial(), sa[i], sb[i])
		}
	}
	ea, eb := allEntries(t, a.l), allEntries(t, b.l)
	for i := range ea {
		if !proto.Equal(ea[i], eb[i]) {
			t.Fatalf("entry %d differs", i)
		}
	}
}

func TestIdempotentResubmission(t *testing.T) {
	f := newFixture(t)
	env := f.sign("acme-gpu", mfd, "GPU-IDEM")
	first := f.apply(env)[0]
	size, root := f.l.Size(), f.l.Root()
	// Again alone, and twice more within one batch.
	for _, r := range append(f.apply(env), f.apply(env, env)...) {
		if r.Err != nil || !r.Duplicate || r.Entry.GetIndex() != first.Entry.GetIndex() ||
			!proto.Equal(r.Entry.GetAcceptedAt(), first.Entry.GetAcceptedAt()) {
			t.Fatalf("re-submission = %+v; want the original entry %d as a duplicate", r, first.Entry.GetIndex())
		}
	}
	if f.l.Size() != size || f.l.Root() != root {
		t.Fatalf("re-submission changed the log")
	}
	// Later events: one in the middle of the chain and the head itself.
	shipped := f.sign("acme-gpu", ship, "GPU-IDEM", to("eu-dist"))
	shipEntry := f.must(shipped)[0]
	received := f.sign("eu-dist", recv, "GPU-IDEM")
	recvEntry := f.must(received)[0]
	for _, c := range []struct {
		env  []byte
		want uint64
	}{{shipped, shipEntry.GetIndex()}, {received, recvEntry.GetIndex()}} {
		if r := f.apply(c.env)[0]; r.Err != nil || !r.Duplicate || r.Entry.GetIndex() != c.want {
			t.Fatalf("re-submitting entry %d = %+v; want it as a duplicate", c.want, r)
		}
	}
	// A second, byte-identical envelope inside the batch that first adds it.
	env2 := f.sign("acme-gpu", mfd, "GPU-IDEM-2")
	rs := f.apply(env2, env2)
	if rs[0].Err != nil || rs[0].Duplicate || !rs[1].Duplicate || rs[1].Entry.GetIndex() != rs[0].Entry.GetIndex() {
		t.Fatalf("in-batch duplicate = %+v, %+v", rs[0], rs[1])
	}
}

func TestBatchHoldsAWholeHistory(t *testing.T) {
	f := newFixture(t)
	life := workload.New(f.c, 3, t0.Add(-7*24*time.Hour)).Lifecycle("GPU-WHOLE", 3)
	rs := f.apply(life...)
	for i, r := range rs {
		if r.Err != nil {
			t.Fatalf("event %d of the chain: %v", i, r.Err)
		}
	}
	st, err := f.l.Serial(context.Background(), "GPU-WHOLE")
	if err != nil || st.GetEventCount() != uint64(len(life)) || st.GetState() != pb.CustodyState_CUSTODY_STATE_INSTALLED {
		t.Fatalf("Serial = %v, %v; want %d events, INSTALLED", st, err, len(life))
	}
	hist, next, err := f.l.SerialHistory(context.Background(), "GPU-WHOLE", 0, 4)
	if err != nil || len(hist) != 4 || next != 4 {
		t.Fatalf("SerialHistory page 1 = %d entries, next %d, %v", len(hist), next, err)
	}
	rest, next, err := f.l.SerialHistory(context.Background(), "GPU-WHOLE", next, 100)
	if err != nil || len(rest) != len(life)-4 || next != 0 {
		t.Fatalf("SerialHistory page 2 = %d entries, next %d, %v", len(rest), next, err)
	}
	for i, e := range append(hist, rest...) {
		if e.GetEvent().GetSerial() != "GPU-WHOLE" || e.GetIndex() != uint64(i) {
			t.Errorf("history[%d] = index %d event %v", i, e.GetIndex(), e.GetEvent())
		}
	}
}

// leafHash computes an entry's leaf hash from the documented encoding, not
// through the ledger.
func leafHash(e *pb.Entry) []byte {
	d := []byte("gpuledger-entry-v1")
	d = binary.BigEndian.AppendUint64(d, e.GetIndex())
	d = binary.BigEndian.AppendUint64(d, uint64(e.GetAcceptedAt().AsTime().UnixNano()))
	h := sha256.Sum256(e.GetEnvelope())
	d = append(d, h[:]...)
	return rfc6962.DefaultHasher.HashLeaf(d)
}

// referenceRoot is RFC 6962's MTH, written naively.
func referenceRoot(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	h := sha256.New()
	h.Write([]byte{1})
	h.Write(referenceRoot(leaves[:k]))
	h.Write(referenceRoot(leaves[k:]))
	return h.Sum(nil)
}

// TestIndependentJudges checks our checkpoints with x/mod's note package, our
// proofs with transparency-dev/merkle, and our root with a naive MTH.
func TestIndependentJudges(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	verifier, err := note.NewVerifier(f.c.NodeVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	type cp struct {
		size uint64
		root []byte
	}
	var cps []cp
	for i, b := range mixedBatches(11, 300) {
		if _, err := f.l.Apply(ctx, ledger.Batch{AcceptedAt: t0.Add(time.Duration(i) * time.Minute).Add(365 * 24 * time.Hour), Envelopes: b}); err != nil {
			t.Fatal(err)
		}
		c, err := f.l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open([]byte(c.GetNote()), note.VerifierList(verifier))
		if err != nil {
			t.Fatalf("note.Open(checkpoint %d) = %v", c.GetSize(), err)
		}
		origin, size, root, err := ledger.ParseCheckpointBody(n.Text)
		if err != nil || origin != f.l.Origin() || size != c.GetSize() || string(root[:]) != string(c.GetRootHash()) {
			t.Fatalf("checkpoint body %q = %q %d %x, %v", n.Text, origin, size, root, err)
		}
		cps = append(cps, cp{size, c.GetRootHash()})
	}
	entries := allEntries(t, f.l)
	leaves := make([][]byte, len(entries))
	for i, e := range entries {
		leaves[i] = leafHash(e)
		if string(leaves[i]) != string(e.GetLeafHash()) {
			t.Fatalf("entry %d leaf hash %x, want %x from the documented encoding", i, e.GetLeafHash(), leaves[i])
		}
	}
	for _, c := range cps {
		if want := referenceRoot(leaves[:c.size]); string(want) != string(c.root) {
			t.Fatalf("checkpoint %d root %x; naive RFC 6962 root %x", c.size, c.root, want)
		}
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for _, c := range cps {
		if c.size == 0 {
			continue
		}
		for _, idx := range []uint64{0, c.size - 1, rng.Uint64N(c.size)} {
			p, err := f.l.InclusionProof(ctx, idx, c.size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx, c.size, leaves[idx], p.GetHashes(), c.root); err != nil {
				t.Fatalf("inclusion of %d in %d: %v", idx, c.size, err)
			}
		}
	}
	for i := range cps {
		for _, j := range []int{i, min(i+1, len(cps)-1), len(cps) - 1, rng.IntN(len(cps))} {
			a, b := cps[min(i, j)], cps[max(i, j)]
			p, err := f.l.ConsistencyProof(ctx, a.size, b.size)
			if err != nil {
				t.Fatal(err)
			}
			if a.size == 0 {
				continue // nothing to prove from an empty tree
			}
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, a.size, b.size, p.GetHashes(), a.root, b.root); err != nil {
				t.Fatalf("consistency %d -> %d: %v", a.size, b.size, err)
			}
		}
	}
	// A proof must not verify against the wrong leaf.
	p, _ := f.l.InclusionProof(ctx, 1, f.l.Size())
	if proof.VerifyInclusion(rfc6962.DefaultHasher, 1, f.l.Size(), leaves[2], p.GetHashes(), cps[len(cps)-1].root) == nil {
		t.Fatal("inclusion proof verified for the wrong leaf")
	}
}

func TestDurability(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openFixture(t, dir)
	applyAll(t, f.l, mixedBatches(13, 200))
	size, root, applied := f.l.Size(), f.l.Root(), f.l.AppliedIndex()
	serials, entries := allSerials(t, f.l), allEntries(t, f.l)
	if err := f.l.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := ledger.DefaultConfig(dir) // no genesis: the store's own
	l, err := ledger.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Size() != size || l.Root() != root || l.AppliedIndex() != applied {
		t.Fatalf("after reopen: size %d root %x applied %d; want %d %x %d", l.Size(), l.Root(), l.AppliedIndex(), size, root, applied)
	}
	if got := allSerials(t, l); !slices.EqualFunc(got, serials, func(a, b *pb.SerialState) bool { return proto.Equal(a, b) }) {
		t.Fatal("serial states changed across reopen")
	}
	if got := allEntries(t, l); !slices.EqualFunc(got, entries, func(a, b *pb.Entry) bool { return proto.Equal(a, b) }) {
		t.Fatal("entries changed across reopen")
	}
}

func TestOpenWithAnotherGenesis(t *testing.T) {
	dir := t.TempDir()
	f := openFixture(t, dir)
	f.l.Close()
	other, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{9})})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ledger.DefaultConfig(dir)
	cfg.Genesis = other.Genesis
	if _, err := ledger.Open(context.Background(), cfg); !errors.Is(err, ledger.ErrGenesisMismatch) {
		t.Fatalf("Open with another genesis = %v, want ErrGenesisMismatch", err)
	}
}

// cancelAfter is a context whose Err reports cancellation after n calls, to
// stop Apply in the middle of a batch.
type cancelAfter struct {
	context.Context
	n int
}

func (c *cancelAfter) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

// TestBatchFailingMidwayLeavesNothing stops Apply halfway through a batch and
// checks that nothing of it was stored, before and after a reopen, and that
// the same batch then applies whole.
func TestBatchFailingMidwayLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	f := openFixture(t, dir)
	f.must(f.sign("acme-gpu", mfd, "GPU-BEFORE"))
	batch := workload.New(f.c, 21, t0).Records("HALF", 200)
	before := f.snap("HALF-000000")
	later := t0.Add(90 * 24 * time.Hour) // after every lifecycle of the batch
	_, err := f.l.Apply(&cancelAfter{Context: context.Background(), n: 100}, ledger.Batch{AcceptedAt: later, Envelopes: batch})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a context cancelled midway = %v, want context.Canceled", err)
	}
	if after := f.snap("HALF-000000"); !before.equal(after) {
		t.Fatalf("a failed batch left something: size %d -> %d", before.size, after.size)
	}
	f.l.Close()
	f = openFixture(t, dir)
	if after := f.snap("HALF-000000"); !before.equal(after) {
		t.Fatalf("after reopen a failed batch left something: size %d -> %d", before.size, after.size)
	}
	rs, err := f.l.Apply(context.Background(), ledger.Batch{AcceptedAt: later, Envelopes: batch})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.Err != nil || r.Duplicate {
			t.Fatalf("entry %d of the retried batch: %+v", i, r)
		}
	}
}

func TestBatchLimits(t *testing.T) {
	f := newFixture(t)
	env := f.sign("acme-gpu", mfd, "GPU-LIMIT")
	too := make([][]byte, ledger.DefaultMaxBatchEnvelopes+1)
	for i := range too {
		too[i] = env
	}
	if _, err := f.l.Apply(context.Background(), ledger.Batch{AcceptedAt: f.now, Envelopes: too}); err == nil {
		t.Fatal("batch over the envelope limit was applied")
	}
	if f.l.Size() != 0 {
		t.Fatalf("size = %d after refused batch", f.l.Size())
	}
}

func TestRegistryAt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.must(f.sign("acme-gpu", mfd, "GPU-REG"))
	kid := f.member("acme-gpu").Keys.Signers()[0].KeyID()
	rev := f.must(f.member("export-regulator").SignChange(&pb.RegistryChange{
		Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
		Change: &pb.RegistryChange_RevokeKey{RevokeKey: &pb.RevokeKey{ParticipantId: "acme-gpu", KeyId: kid}},
	}))[0]
	for _, tc := range []struct {
		at          uint64
		wantRevoked uint64
	}{{rev.GetIndex(), 0}, {rev.GetIndex() + 1, rev.GetIndex() + 1}} {
		reg, err := f.l.RegistryAt(ctx, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		k, owner := reg.Key(kid)
		if owner != "acme-gpu" || k.GetRevokedAtIndex() != tc.wantRevoked {
			t.Errorf("RegistryAt(%d).Key = %v of %s; want revoked_at %d", tc.at, k, owner, tc.wantRevoked)
		}
	}
	if k, _ := f.l.Registry().Key(kid); ledger.KeyActive(k, f.l.Size()) {
		t.Error("revoked key still active in the current registry")
	}
}

package ledger_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	tlogformat "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestSerialMap: two stores fed the same batches agree on the map's root
// after every batch; the root Apply keeps batch by batch equals a tree
// built in one go from the serials' stored states and the registry; every
// serial proves its head, count and state, and serials never seen prove
// their absence.
func TestSerialMap(t *testing.T) {
	batches := mixedBatches(11, 400)
	// Registry changes in the stream too: the registry leaf moves.
	reg := testConsortium.Member("export-regulator")
	change := func(i int) []byte {
		return reg.SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.New(t0), Reason: fmt.Sprint("change ", i),
			Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: "rack-integrator"}}})
	}
	batches[3] = append(batches[3], change(1))
	a, b := newFixture(t), newFixture(t)
	at := t0.Add(365 * 24 * time.Hour)
	for i, batch := range batches {
		for _, f := range []*fixture{a, b} {
			if _, err := f.l.Apply(context.Background(), ledger.Batch{AcceptedAt: at.Add(time.Duration(i) * time.Second), Envelopes: batch}); err != nil {
				t.Fatal(err)
			}
		}
		if i == len(batches)/2 {
			// b restarts: its map's cache is gone, its tiles are read again.
			b.l.Close()
			b = openFixture(t, b.dir)
		}
		ra, errA := a.l.MapRoot(a.l.Size())
		rb, errB := b.l.MapRoot(b.l.Size())
		if errA != nil || errB != nil || ra != rb {
			t.Fatalf("batch %d: map roots %x (%v) and %x (%v)", i, ra, errA, rb, errB)
		}
	}
	if _, err := a.l.MapRoot(0); err != nil {
		t.Fatalf("the map root at size 0: %v", err)
	}

	// Built again in one go, from what the store says.
	states := allSerials(t, a.l)
	for _, st := range states {
		st.OpenFindings = nil
	}
	d, err := ledger.RegistryDigest(a.l.Registry())
	if err != nil {
		t.Fatal(err)
	}
	want := mapFromScratch(t, states, ledger.RegistryLeaf(1, registryIndex(t, a.l), d))
	got, _ := a.l.MapRoot(a.l.Size())
	if got != want {
		t.Fatalf("the map kept by Apply has root %x; built from the %d serials' states, %x", got, len(states), want)
	}

	for i, st := range states {
		if i%7 != 0 {
			continue
		}
		size, root, v, p, err := a.l.MapProof(ledger.MapKey(st.GetSerial()))
		if err != nil || size != a.l.Size() || root != got || v == nil {
			t.Fatalf("MapProof(%s): size %d root %x value %v: %v", st.GetSerial(), size, root, v, err)
		}
		if err := smt.Verify(root, ledger.MapKey(st.GetSerial()), v, p); err != nil {
			t.Fatalf("the proof of %s: %v", st.GetSerial(), err)
		}
	}
	for i := range 20 {
		k := ledger.MapKey(fmt.Sprintf("NEVER-%d", i))
		_, root, v, p, err := a.l.MapProof(k)
		if err != nil || v != nil || smt.Verify(root, k, nil, p) != nil {
			t.Fatalf("absence of NEVER-%d: value %v, %v", i, v, err)
		}
	}
}

func registryIndex(t *testing.T, l *ledger.Ledger) uint64 {
	es, _, err := l.RegistryEntries(context.Background(), 0, 10)
	if err != nil || len(es) != 1 {
		t.Fatalf("registry entries: %d, %v", len(es), err)
	}
	return es[0].GetIndex()
}

// TestCheckpointCarriesMap: the signed checkpoint carries the serial map's
// root as an extension line that x/mod's note and transparency-dev's
// tlog-checkpoint parser both read past (the judges here), with the log's
// size and root as before; the line is the map's root at that size.
func TestCheckpointCarriesMap(t *testing.T) {
	f := newFixture(t)
	applyAll(t, f.l, mixedBatches(5, 100))
	cp, err := f.l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(testConsortium.NodeVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	parsed, rest, n, err := tlogformat.ParseCheckpoint([]byte(cp.GetNote()), cp.GetOrigin(), v)
	if err != nil {
		t.Fatalf("transparency-dev/formats does not read the checkpoint: %v\n%s", err, cp.GetNote())
	}
	if parsed.Size != f.l.Size() || [32]byte(parsed.Hash) != f.l.Root() {
		t.Fatalf("the parser reads size %d root %x; the log has %d %x", parsed.Size, parsed.Hash, f.l.Size(), f.l.Root())
	}
	want, err := f.l.MapRoot(f.l.Size())
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != ledger.MapLinePrefix+base64.StdEncoding.EncodeToString(want[:])+"\n" {
		t.Fatalf("the checkpoint's extension lines are %q; want the map root %x", rest, want)
	}
	got, ok, err := ledger.CheckpointMapRoot(n.Text)
	if err != nil || !ok || got != want || [32]byte(cp.GetMapRoot()) != want {
		t.Fatalf("CheckpointMapRoot = %x %v %v; MapRoot %x; field %x", got, ok, err, want, cp.GetMapRoot())
	}
	// A cosigner's body for the same size is the same text.
	co, err := f.l.SignCheckpointAt(context.Background(), f.l.Size())
	if err != nil {
		t.Fatal(err)
	}
	if co.GetNote() != cp.GetNote() {
		t.Fatalf("SignCheckpointAt signs another body:\n%s\n%s", co.GetNote(), cp.GetNote())
	}
}

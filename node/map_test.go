package node_test

import (
	"bytes"
	"testing"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/note"
)

// TestGetMapProof: over gRPC, a serial's map proof leads, with the head,
// count and state digest it names, to the map root of a checkpoint signed
// by the node (x/mod's note checks the signature); a serial never recorded
// proves its absence; the registry's leaf proves too. GetSerial, the first
// page of ListSerialEvents and VerifySerial carry the serial's proof.
func TestGetMapProof(t *testing.T) {
	tn := startNode(t, t.TempDir())
	m := sign(event("MP-1", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))
	tn.append(t, m)
	ship := sign(event("MP-1", pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", entryHash(m), func(ev *pb.CustodyEvent) { ev.Counterparty = "eu-dist" }))
	tn.append(t, ship)
	v, err := note.NewVerifier(dev.NodeVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	prove := func(req *pb.GetMapProofRequest) (*pb.MapProof, smt.Hash) {
		t.Helper()
		r, err := tn.ac.GetMapProof(t.Context(), req)
		if err != nil {
			t.Fatalf("GetMapProof(%v): %v", req, err)
		}
		n, err := note.Open([]byte(r.GetCheckpoint().GetNote()), note.VerifierList(v))
		if err != nil {
			t.Fatalf("the checkpoint does not verify: %v", err)
		}
		root, ok, err := ledger.CheckpointMapRoot(n.Text)
		if err != nil || !ok {
			t.Fatalf("the checkpoint names no map root: %v", err)
		}
		return r.GetProof(), root
	}
	check := func(p *pb.MapProof, root smt.Hash, present bool) {
		t.Helper()
		pr, err := smt.UnmarshalProof(p.GetProof())
		if err != nil {
			t.Fatal(err)
		}
		var value *smt.Hash
		if present {
			value = new(smt.Hash)
			copy(value[:], p.GetValue())
		}
		if err := smt.Verify(root, smt.Hash(p.GetKey()), value, pr); err != nil {
			t.Fatalf("the proof does not verify: %v", err)
		}
	}

	p, root := prove(&pb.GetMapProofRequest{Serial: "MP-1"})
	if key := ledger.MapKey("MP-1"); !bytes.Equal(p.GetKey(), key[:]) {
		t.Fatalf("key %x, want %x", p.GetKey(), key)
	}
	if !bytes.Equal(p.GetHeadHash(), entryHash(ship)) || p.GetEventCount() != 2 {
		t.Fatalf("the leaf names head %x after %d events; want the SHIPPED entry %x after 2", p.GetHeadHash(), p.GetEventCount(), entryHash(ship))
	}
	leaf := ledger.SerialLeaf(p.GetHeadHash(), p.GetEventCount(), p.GetHeadIndex(), [32]byte(p.GetStateDigest()))
	if !bytes.Equal(leaf[:], p.GetValue()) {
		t.Fatalf("the value %x is not the leaf of the head, count, index and digest given (%x)", p.GetValue(), leaf)
	}
	check(p, root, true)

	p, root = prove(&pb.GetMapProofRequest{Serial: "NEVER-RECORDED"})
	if len(p.GetValue()) != 0 || p.GetEventCount() != 0 {
		t.Fatalf("a serial never recorded has value %x", p.GetValue())
	}
	check(p, root, false)

	p, root = prove(&pb.GetMapProofRequest{Registry: true})
	check(p, root, true)

	// The responses that serve a serial carry its map proof too, with a
	// checkpoint signed at the proof's size.
	checkServed := func(what string, p *pb.MapProof, cp *pb.Checkpoint) {
		t.Helper()
		if p == nil || cp == nil {
			t.Fatalf("%s carries no map proof", what)
		}
		n, err := note.Open([]byte(cp.GetNote()), note.VerifierList(v))
		if err != nil {
			t.Fatalf("%s: the map checkpoint does not verify: %v", what, err)
		}
		root, ok, err := ledger.CheckpointMapRoot(n.Text)
		if err != nil || !ok || !bytes.Equal(p.GetHeadHash(), entryHash(ship)) || p.GetEventCount() != 2 {
			t.Fatalf("%s: map root %v %v; head %x after %d events", what, ok, err, p.GetHeadHash(), p.GetEventCount())
		}
		check(p, root, true)
	}
	gs, err := tn.lc.GetSerial(t.Context(), &pb.GetSerialRequest{Serial: "MP-1"})
	if err != nil {
		t.Fatal(err)
	}
	checkServed("GetSerial", gs.GetMapProof(), gs.GetMapCheckpoint())
	ls, err := tn.lc.ListSerialEvents(t.Context(), &pb.ListSerialEventsRequest{Serial: "MP-1", PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkServed("ListSerialEvents' first page", ls.GetMapProof(), ls.GetMapCheckpoint())
	ls, err = tn.lc.ListSerialEvents(t.Context(), &pb.ListSerialEventsRequest{Serial: "MP-1", PageSize: 1, PageToken: ls.GetNextPageToken()})
	if err != nil || ls.GetMapProof() != nil || len(ls.GetEntries()) != 1 {
		t.Fatalf("the second page: %d entries, map proof %v, %v", len(ls.GetEntries()), ls.GetMapProof() != nil, err)
	}
	vs, err := tn.ac.VerifySerial(t.Context(), &pb.VerifySerialRequest{Serial: "MP-1"})
	if err != nil || !vs.GetOk() {
		t.Fatalf("VerifySerial: %v, %v", vs, err)
	}
	checkServed("VerifySerial", vs.GetMapProof(), vs.GetMapCheckpoint())

	_, err = tn.ac.GetMapProof(t.Context(), &pb.GetMapProofRequest{Serial: "MP-1", Registry: true})
	if reasonOf(err) != "BAD_REQUEST" {
		t.Fatalf("serial and registry: %v", err)
	}
	_, err = tn.ac.GetMapProof(t.Context(), &pb.GetMapProofRequest{Serial: "bad serial!"})
	if reasonOf(err) != "BAD_REQUEST" {
		t.Fatalf("a bad serial: %v", err)
	}
}

package verify_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/verify"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestCheckpoint(t *testing.T) {
	c, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{5})})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{6})})
	v, err := verify.New(c.Genesis)
	if err != nil {
		t.Fatal(err)
	}
	signed := func(s note.Signer, origin string) string {
		b, err := note.Sign(&note.Note{Text: ledger.CheckpointBody(origin, 7, tlog.Hash{1})}, s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cp, err := v.Checkpoint(signed(c.NodeSigner, v.Origin()))
	if err != nil || cp.Size != 7 || cp.Root != (tlog.Hash{1}) || len(cp.Signers) != 1 || cp.Signers[0] != c.NodeName {
		t.Fatalf("Checkpoint(good) = %+v, %v", cp, err)
	}
	for name, text := range map[string]string{
		"signed by another ledger's node": signed(other.NodeSigner, v.Origin()),
		"another ledger's origin":         signed(c.NodeSigner, "gpuledger/"+strings.Repeat("0", 64)),
		"a flipped byte":                  strings.Replace(signed(c.NodeSigner, v.Origin()), "\n7\n", "\n8\n", 1),
		"a signature in non-canonical base64": func() string {
			// A 68-byte signature ends in two unused bits; setting one
			// leaves the decoded signature, and note's check, unchanged.
			s := signed(c.NodeSigner, v.Origin())
			i := strings.LastIndex(s, "=") - 1
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
			return s[:i] + string(alphabet[strings.IndexByte(alphabet, s[i])^1]) + s[i+1:]
		}(),
	} {
		if _, err := v.Checkpoint(text); err == nil {
			t.Errorf("Checkpoint(%s) verified", name)
		}
	}
}

// TestMinSigners: a checkpoint needs k distinct genesis nodes' signatures.
func TestMinSigners(t *testing.T) {
	specs := consortium.Dev()
	c, err := consortium.Build(specs, consortium.Options{Rand: rand.NewChaCha8([32]byte{8})})
	if err != nil {
		t.Fatal(err)
	}
	// A second node in the genesis.
	g, _ := ledger.ParseGenesis(c.Genesis)
	skey, vkey, _ := note.GenerateKey(rand.NewChaCha8([32]byte{9}), "node-2")
	g.Nodes = append(g.Nodes, &pb.Node{Name: "node-2", ParticipantId: "eu-dist", VerifierKey: vkey})
	genesis, _ := consortium.MarshalGenesis(g)
	s2, _ := note.NewSigner(skey)
	v, err := verify.New(genesis)
	if err != nil {
		t.Fatal(err)
	}
	body := ledger.CheckpointBody(v.Origin(), 3, tlog.Hash{2})
	one, _ := note.Sign(&note.Note{Text: body}, c.NodeSigner)
	two, _ := note.Sign(&note.Note{Text: body}, c.NodeSigner, s2)
	v.MinSigners = 2
	if _, err := v.Checkpoint(string(one)); err == nil {
		t.Fatal("a checkpoint signed by 1 node passed with 2 required")
	}
	if cp, err := v.Checkpoint(string(two)); err != nil || len(cp.Signers) != 2 {
		t.Fatalf("Checkpoint(2 of 2) = %v, %v", cp, err)
	}
	// k counts organisations: two nodes of one organisation are one.
	g.Nodes[1].ParticipantId = g.Nodes[0].GetParticipantId()
	same, _ := consortium.MarshalGenesis(g)
	vs, err := verify.New(same)
	if err != nil {
		t.Fatal(err)
	}
	vs.MinSigners = 2
	body = ledger.CheckpointBody(vs.Origin(), 3, tlog.Hash{2})
	both, _ := note.Sign(&note.Note{Text: body}, c.NodeSigner, s2)
	if _, err := vs.Checkpoint(string(both)); err == nil || !strings.Contains(err.Error(), "1 organisation") {
		t.Fatalf("two nodes of one organisation passed as two: %v", err)
	}
}

// TestCheckpointFromRegistryNodes: a node added by a regulator-signed
// registry change counts for checkpoints after its entry, not before, and
// not without the entry.
func TestCheckpointFromRegistryNodes(t *testing.T) {
	c, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{12})})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := verify.New(c.Genesis)
	skey, vkey, _ := note.GenerateKey(rand.NewChaCha8([32]byte{13}), "node-9")
	s9, _ := note.NewSigner(skey)
	env := c.Member("export-regulator").SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.Now(),
		Change: &pb.RegistryChange_AddNode{AddNode: &pb.Node{Name: "node-9", ParticipantId: "eu-dist", VerifierKey: vkey}}})
	added := []*pb.Entry{{Index: 4, Envelope: env, AcceptedAt: timestamppb.Now()}}
	sign := func(size uint64) string {
		b, _ := note.Sign(&note.Note{Text: ledger.CheckpointBody(v.Origin(), size, tlog.Hash{3})}, s9)
		return string(b)
	}
	if _, err := v.CheckpointWith(sign(10), added); err != nil {
		t.Fatalf("checkpoint 10 by a node added at entry 4: %v", err)
	}
	if _, err := v.CheckpointWith(sign(4), added); err == nil {
		t.Fatal("checkpoint 4 by a node added at entry 4 verified")
	}
	if _, err := v.Checkpoint(sign(10)); err == nil {
		t.Fatal("checkpoint by a node unknown to the genesis verified without the registry entry")
	}
	forged := c.Member("eu-dist").SignChange(&pb.RegistryChange{Actor: "eu-dist", OccurredAt: timestamppb.Now(),
		Change: &pb.RegistryChange_AddNode{AddNode: &pb.Node{Name: "node-9", ParticipantId: "eu-dist", VerifierKey: vkey}}})
	if _, err := v.CheckpointWith(sign(10), []*pb.Entry{{Index: 4, Envelope: forged, AcceptedAt: timestamppb.Now()}}); err == nil {
		t.Fatal("a node added by a non-regulator counted")
	}
}

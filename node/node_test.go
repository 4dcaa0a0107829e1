package node_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var dev = func() *consortium.Consortium {
	c, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{4})})
	if err != nil {
		panic(err)
	}
	return c
}()

// testNode is a node serving on 127.0.0.1 with a client connected to it.
type testNode struct {
	n    *node.Node
	srv  *grpc.Server
	addr string
	conn *grpc.ClientConn
	lc   gpuledgerv1grpc.LedgerServiceClient
	ac   gpuledgerv1grpc.AuditServiceClient
}

func startNode(t *testing.T, dir string) *testNode { return startNodeB(t, dir) }

func startNodeB(t testing.TB, dir string) *testNode { return startNodeWith(t, dir, nil) }

// startNodeWith is startNode with the node's configuration changed by mod.
func startNodeWith(t testing.TB, dir string, mod func(*node.Config)) *testNode {
	t.Helper()
	cfg := node.DefaultConfig(dev.NodeName, dir)
	cfg.Genesis, cfg.NodeSigner = dev.Genesis, dev.NodeSigner
	cfg.Logger = slog.New(slog.DiscardHandler)
	if mod != nil {
		mod(&cfg)
	}
	n := openLeader(t, cfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(node.ServerOptions()...)
	n.Register(s)
	go s.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{n: n, srv: s, addr: lis.Addr().String(), conn: conn,
		lc: gpuledgerv1grpc.NewLedgerServiceClient(conn), ac: gpuledgerv1grpc.NewAuditServiceClient(conn)}
	t.Cleanup(func() { tn.stop(t) })
	return tn
}

func (tn *testNode) stop(t testing.TB) {
	if tn.srv == nil {
		return
	}
	tn.conn.Close()
	tn.srv.GracefulStop()
	if err := tn.n.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	tn.srv = nil
}

func member(id string) *consortium.Member { return dev.Member(id) }

func event(serial string, typ pb.EventType, actor string, prev []byte, mods ...func(*pb.CustodyEvent)) *pb.CustodyEvent {
	p := member(actor).Participant
	s := p.GetSites()[0]
	ev := &pb.CustodyEvent{LedgerId: dev.LedgerID, Serial: serial, Type: typ, Actor: actor, Location: &pb.Location{Country: s.GetCountry(), SiteId: s.GetId()},
		OccurredAt: timestamppb.New(time.Now().Add(-time.Minute)), PrevEventHash: prev}
	if typ == pb.EventType_EVENT_TYPE_MANUFACTURED {
		ev.Model = "H100-SXM5-80GB"
	}
	for _, m := range mods {
		m(ev)
	}
	return ev
}

func sign(ev *pb.CustodyEvent, signers ...keys.Signer) *pb.Envelope {
	if len(signers) == 0 {
		signers = member(ev.GetActor()).Keys.Signers()
	}
	env, err := dsse.SignMessage(dsse.CustodyEventType, ev, signers...)
	if err != nil {
		panic(err)
	}
	return env
}

func entryHash(env *pb.Envelope) []byte {
	b, _ := dsse.Marshal(env)
	h := sha256.Sum256(b)
	return h[:]
}

func (tn *testNode) append(t *testing.T, env *pb.Envelope) *pb.Receipt {
	t.Helper()
	r, err := tn.lc.Append(t.Context(), &pb.AppendRequest{Envelope: env})
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return r.GetReceipt()
}

func (tn *testNode) checkpoint(t *testing.T) *pb.Checkpoint {
	t.Helper()
	r, err := tn.ac.GetCheckpoint(t.Context(), &pb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetCheckpoint()
}

func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// TestBadInput sends every kind of bad input over gRPC: each gets the right
// code and ErrorInfo reason, and the ledger's size and root do not change.
func TestBadInput(t *testing.T) {
	tn := startNode(t, t.TempDir())
	mfd := sign(event("GPU-1", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))
	first := tn.append(t, mfd)
	head := first.GetEntryHash()

	garbage := sign(event("GPU-1", pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", head, func(e *pb.CustodyEvent) { e.Counterparty = "eu-dist" }))
	garbage.Payload = []byte("\xff\xfe not a protobuf")
	wrongKey := sign(event("GPU-1", pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", head, func(e *pb.CustodyEvent) { e.Counterparty = "eu-dist" }), member("eu-dist").Keys.Signers()...)
	ghost, _ := keys.Generate("ghost-trading", nil, keys.Ed25519)
	unknown := sign(event("GPU-1", pb.EventType_EVENT_TYPE_RECEIVED, "acme-gpu", head, func(e *pb.CustodyEvent) { e.Actor = "ghost-trading" }), ghost.Signers()...)
	stale := sign(event("GPU-1", pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", make([]byte, 32), func(e *pb.CustodyEvent) { e.Counterparty = "eu-dist" }))
	big := sign(event("GPU-2", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil, func(e *pb.CustodyEvent) {
		e.Evidence = []*pb.Evidence{{Type: "application/octet-stream", Data: make([]byte, 70<<10)}}
	}))
	badType := sign(event("GPU-3", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil, func(e *pb.CustodyEvent) { e.Type = 42 }))
	badSerial := sign(event("GPU 3;rm", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))
	future := sign(event("GPU-4", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil, func(e *pb.CustodyEvent) {
		e.OccurredAt = timestamppb.New(time.Now().Add(24 * time.Hour))
	}))
	unknownField := sign(event("GPU-5", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))
	unknownField.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 77, protowire.VarintType), 1))

	tests := []struct {
		name   string
		env    *pb.Envelope
		code   codes.Code
		reason string
	}{
		{"garbage payload bytes", garbage, codes.InvalidArgument, "PAYLOAD_MALFORMED"},
		{"envelope signed by the wrong key", wrongKey, codes.Unauthenticated, "KEY_NOT_ACTORS"},
		{"unknown participant", unknown, codes.Unauthenticated, "UNKNOWN_PARTICIPANT"},
		{"stale head", stale, codes.Aborted, "STALE_HEAD"},
		{"oversized envelope", big, codes.ResourceExhausted, "TOO_LARGE"},
		{"unknown event type", badType, codes.InvalidArgument, "UNKNOWN_EVENT_TYPE"},
		{"serial with forbidden characters", badSerial, codes.InvalidArgument, "INVALID_SERIAL"},
		{"time far in the future", future, codes.InvalidArgument, "TIME_IN_FUTURE"},
		{"no envelope", nil, codes.InvalidArgument, node.ReasonBadRequest},
		{"unknown field", unknownField, codes.InvalidArgument, "NOT_CANONICAL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tn.checkpoint(t)
			_, err := tn.lc.Append(t.Context(), &pb.AppendRequest{Envelope: tc.env})
			if status.Code(err) != tc.code || reasonOf(err) != tc.reason {
				t.Fatalf("Append = %v (reason %q); want %v %s", err, reasonOf(err), tc.code, tc.reason)
			}
			if tc.code == codes.Aborted {
				var head string
				for _, d := range status.Convert(err).Details() {
					if info, ok := d.(*errdetails.ErrorInfo); ok {
						head = info.GetMetadata()["current_head"]
					}
				}
				if head != fmt.Sprintf("%x", first.GetEntryHash()) {
					t.Errorf("stale head error names head %q, want %x", head, first.GetEntryHash())
				}
			}
			if after := tn.checkpoint(t); after.GetSize() != before.GetSize() || string(after.GetRootHash()) != string(before.GetRootHash()) {
				t.Fatalf("bad input changed the ledger: %d -> %d", before.GetSize(), after.GetSize())
			}
		})
	}

	t.Run("replayed envelope returns the original receipt", func(t *testing.T) {
		again := tn.append(t, mfd)
		if !again.GetDuplicate() || again.GetIndex() != first.GetIndex() || !proto.Equal(again.GetAcceptedAt(), first.GetAcceptedAt()) {
			t.Fatalf("replay = %v; want the original receipt of entry %d", again, first.GetIndex())
		}
	})
	t.Run("batch over the limit", func(t *testing.T) {
		before := tn.checkpoint(t)
		envs := make([]*pb.Envelope, 1001)
		for i := range envs {
			envs[i] = mfd
		}
		_, err := tn.lc.AppendBatch(t.Context(), &pb.AppendBatchRequest{Envelopes: envs})
		if status.Code(err) != codes.ResourceExhausted || reasonOf(err) != "TOO_LARGE" {
			t.Fatalf("AppendBatch(1001) = %v", err)
		}
		if after := tn.checkpoint(t); after.GetSize() != before.GetSize() {
			t.Fatal("refused batch changed the ledger")
		}
	})
	t.Run("batch reports per-envelope errors", func(t *testing.T) {
		r, err := tn.lc.AppendBatch(t.Context(), &pb.AppendBatchRequest{Envelopes: []*pb.Envelope{stale, sign(event("GPU-6", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))}})
		if err != nil {
			t.Fatal(err)
		}
		if e := r.GetResults()[0].GetError(); e.GetReason() != "STALE_HEAD" || codes.Code(e.GetCode()) != codes.Aborted || len(e.GetCurrentHead()) != 32 {
			t.Errorf("result 0 = %v", r.GetResults()[0])
		}
		if r.GetResults()[1].GetReceipt() == nil {
			t.Errorf("result 1 = %v, want a receipt", r.GetResults()[1])
		}
	})
}

// TestReceiptsVerify checks a receipt with independent judges: its
// checkpoint with x/mod's note, its inclusion proof with transparency-dev.
func TestReceiptsVerify(t *testing.T) {
	tn := startNode(t, t.TempDir())
	v, _ := note.NewVerifier(dev.NodeVerifierKey)
	var prev []byte
	for i, typ := range []pb.EventType{pb.EventType_EVENT_TYPE_MANUFACTURED, pb.EventType_EVENT_TYPE_SHIPPED} {
		ev := event("GPU-R", typ, "acme-gpu", prev, func(e *pb.CustodyEvent) {
			if e.Type == pb.EventType_EVENT_TYPE_SHIPPED {
				e.Counterparty = "eu-dist"
			}
		})
		env := sign(ev)
		r := tn.append(t, env)
		prev = r.GetEntryHash()
		if _, err := note.Open([]byte(r.GetCheckpoint().GetNote()), note.VerifierList(v)); err != nil {
			t.Fatalf("receipt %d checkpoint: %v", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.GetIndex(), r.GetCheckpoint().GetSize(), r.GetLeafHash(),
			r.GetInclusionProof().GetHashes(), r.GetCheckpoint().GetRootHash()); err != nil {
			t.Fatalf("receipt %d inclusion: %v", i, err)
		}
		if string(r.GetEntryHash()) != string(entryHash(env)) {
			t.Fatalf("receipt entry hash %x, want SHA-256 of the envelope %x", r.GetEntryHash(), entryHash(env))
		}
	}
}

// TestConcurrentAppends: 32 clients append to distinct serials while 8 race
// on one serial's head. Every acknowledged entry is present, exactly one
// append wins per head, and the root verifies.
func TestConcurrentAppends(t *testing.T) {
	tn := startNode(t, t.TempDir())
	race := tn.append(t, sign(event("RACE-0", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil)))
	var mu sync.Mutex
	var acked []*pb.Receipt
	var wg sync.WaitGroup
	const perClient = 6
	for c := range 32 {
		wg.Go(func() {
			serial := fmt.Sprintf("SOLO-%02d", c)
			var prev []byte
			for i := range perClient {
				typ := pb.EventType_EVENT_TYPE_MANUFACTURED
				actor := "acme-gpu"
				mod := func(*pb.CustodyEvent) {}
				if i > 0 {
					typ, actor = pb.EventType_EVENT_TYPE_ATTESTED, "acme-gpu"
				}
				r, err := tn.lc.Append(t.Context(), &pb.AppendRequest{Envelope: sign(event(serial, typ, actor, prev, mod))})
				if err != nil {
					t.Errorf("client %d append %d: %v", c, i, err)
					return
				}
				prev = r.GetReceipt().GetEntryHash()
				mu.Lock()
				acked = append(acked, r.GetReceipt())
				mu.Unlock()
			}
		})
	}
	// 8 racers for each of several heads of RACE-0.
	head := race.GetEntryHash()
	wins := 0
	for round := range 5 {
		var rwg sync.WaitGroup
		results := make(chan *pb.Receipt, 8)
		for r := range 8 {
			rwg.Go(func() {
				ev := event("RACE-0", pb.EventType_EVENT_TYPE_ATTESTED, "acme-gpu", head, func(e *pb.CustodyEvent) {
					e.Reference = fmt.Sprintf("round %d racer %d", round, r)
				})
				resp, err := tn.lc.Append(t.Context(), &pb.AppendRequest{Envelope: sign(ev)})
				switch {
				case err == nil:
					results <- resp.GetReceipt()
				case status.Code(err) != codes.Aborted:
					t.Errorf("racer: %v, want ABORTED or success", err)
				}
			})
		}
		rwg.Wait()
		close(results)
		n := 0
		for r := range results {
			n++
			head = r.GetEntryHash()
			mu.Lock()
			acked = append(acked, r)
			mu.Unlock()
		}
		if n != 1 {
			t.Fatalf("round %d: %d racers won the same head; want exactly 1", round, n)
		}
		wins++
	}
	wg.Wait()
	if len(acked) != 32*perClient+wins {
		t.Fatalf("%d acknowledged, want %d", len(acked), 32*perClient+wins)
	}
	cp := tn.checkpoint(t)
	for _, r := range acked {
		e, err := tn.lc.GetEntry(t.Context(), &pb.GetEntryRequest{Key: &pb.GetEntryRequest_Index{Index: r.GetIndex()}})
		if err != nil || string(e.GetEntry().GetEntryHash()) != string(r.GetEntryHash()) {
			t.Fatalf("acknowledged entry %d: %v", r.GetIndex(), err)
		}
		p, err := tn.ac.GetInclusionProof(t.Context(), &pb.GetInclusionProofRequest{LeafIndex: r.GetIndex(), TreeSize: cp.GetSize()})
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.GetIndex(), cp.GetSize(), r.GetLeafHash(), p.GetProof().GetHashes(), cp.GetRootHash()); err != nil {
			t.Fatalf("entry %d not in the root: %v", r.GetIndex(), err)
		}
	}
	if cp.GetSize() != uint64(len(acked))+1 {
		t.Fatalf("log size %d, want %d acknowledged + 1", cp.GetSize(), len(acked))
	}
}

// TestRestart: after a restart every entry and the root are unchanged, and
// writes continue.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	tn := startNode(t, dir)
	var prev []byte
	for _, typ := range []pb.EventType{pb.EventType_EVENT_TYPE_MANUFACTURED, pb.EventType_EVENT_TYPE_ATTESTED, pb.EventType_EVENT_TYPE_ATTESTED} {
		prev = tn.append(t, sign(event("GPU-RS", typ, "acme-gpu", prev))).GetEntryHash()
	}
	before := tn.checkpoint(t)
	tn.stop(t)
	tn = startNode(t, dir)
	after := tn.checkpoint(t)
	if after.GetSize() != before.GetSize() || string(after.GetRootHash()) != string(before.GetRootHash()) {
		t.Fatalf("after restart: size %d root %x; want %d %x", after.GetSize(), after.GetRootHash(), before.GetSize(), before.GetRootHash())
	}
	r := tn.append(t, sign(event("GPU-RS", pb.EventType_EVENT_TYPE_ATTESTED, "acme-gpu", prev)))
	if r.GetIndex() != before.GetSize() {
		t.Fatalf("first entry after restart has index %d, want %d", r.GetIndex(), before.GetSize())
	}
}

func TestReadsAndPaging(t *testing.T) {
	tn := startNode(t, t.TempDir())
	var prev []byte
	for i := range 5 {
		typ := pb.EventType_EVENT_TYPE_ATTESTED
		if i == 0 {
			typ = pb.EventType_EVENT_TYPE_MANUFACTURED
		}
		prev = tn.append(t, sign(event("GPU-P", typ, "acme-gpu", prev))).GetEntryHash()
	}
	var got []*pb.Entry
	tok := ""
	for {
		r, err := tn.lc.ListSerialEvents(t.Context(), &pb.ListSerialEventsRequest{Serial: "GPU-P", PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.GetEntries()...)
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(got) != 5 || got[4].GetEvent().GetType() != pb.EventType_EVENT_TYPE_ATTESTED {
		t.Fatalf("paged history has %d entries", len(got))
	}
	if _, err := tn.lc.ListSerialEvents(t.Context(), &pb.ListSerialEventsRequest{Serial: "GPU-P", PageToken: "garbage!"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad page token = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := tn.lc.GetSerial(t.Context(), &pb.GetSerialRequest{Serial: "NOPE"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetSerial(unknown) = %v, want NOT_FOUND", err)
	}
	r, err := tn.lc.GetSerial(t.Context(), &pb.GetSerialRequest{Serial: "GPU-P", MinIndex: 5})
	if err != nil || r.GetAppliedSize() < 5 {
		t.Fatalf("GetSerial(min_index 5) = %v, %v", r, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := tn.lc.GetSerial(ctx, &pb.GetSerialRequest{Serial: "GPU-P", MinIndex: 99}); status.Code(err) != codes.Unavailable || reasonOf(err) != node.ReasonStale {
		t.Fatalf("GetSerial(min_index beyond the log) = %v, want UNAVAILABLE STALE_READ", err)
	}
	vr, err := tn.ac.VerifySerial(t.Context(), &pb.VerifySerialRequest{Serial: "GPU-P"})
	if err != nil || !vr.GetOk() || vr.GetEntriesChecked() != 5 {
		t.Fatalf("VerifySerial = %v, %v", vr, err)
	}
	// StreamEntries follows new entries.
	stream, err := tn.lc.StreamEntries(ctx, &pb.StreamEntriesRequest{StartIndex: 3, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(3); want < 5; want++ {
		m, err := stream.Recv()
		if err != nil || m.GetEntry().GetIndex() != want {
			t.Fatalf("stream = %v, %v; want entry %d", m, err, want)
		}
	}
	tn.append(t, sign(event("GPU-P", pb.EventType_EVENT_TYPE_ATTESTED, "acme-gpu", prev)))
	if m, err := stream.Recv(); err != nil || m.GetEntry().GetIndex() != 5 {
		t.Fatalf("followed stream = %v, %v; want the new entry 5", m, err)
	}
	// Envelopes only (the node sends the stored bytes as they are), in
	// batches and one a message: every entry once, in order, with its index,
	// time, envelope and flags as the decoded stream has them, and nothing
	// derived from the envelope.
	var decoded []*pb.Entry
	ds, err := tn.lc.StreamEntries(ctx, &pb.StreamEntriesRequest{Batch: 4})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := ds.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, m.GetEntries()...)
	}
	for _, batch := range []uint32{4, 0} {
		bs, err := tn.lc.StreamEntries(ctx, &pb.StreamEntriesRequest{Batch: batch, EnvelopesOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var sent []uint64
		for {
			m, err := bs.Recv()
			if err == io.EOF {
				break
			}
			got := m.GetEntries()
			if batch == 0 {
				got = []*pb.Entry{m.GetEntry()}
			}
			if err != nil || (batch > 0) != (m.GetEntry() == nil) || len(got) > max(int(batch), 1) {
				t.Fatalf("envelopes_only stream, batch %d = %v, %v", batch, m, err)
			}
			for _, e := range got {
				if e.GetEvent() != nil || e.GetEntryHash() != nil || e.GetLeafHash() != nil || e.GetSignerKeyIds() != nil {
					t.Fatalf("entry %d of an envelopes_only stream: event %v, entry hash %x, leaf hash %x, signers %v",
						e.GetIndex(), e.GetEvent(), e.GetEntryHash(), e.GetLeafHash(), e.GetSignerKeyIds())
				}
				i := e.GetIndex()
				if i >= uint64(len(decoded)) {
					t.Fatalf("envelopes_only stream sent entry %d of %d", i, len(decoded))
				}
				d := decoded[i]
				if want := (&pb.Entry{Index: i, AcceptedAt: d.GetAcceptedAt(), Envelope: d.GetEnvelope(), Flags: d.GetFlags()}); !proto.Equal(e, want) {
					t.Fatalf("entry %d of an envelopes_only stream:\n%v\nwant the decoded stream's\n%v", i, e, want)
				}
				sent = append(sent, e.GetIndex())
			}
		}
		if !slices.Equal(sent, []uint64{0, 1, 2, 3, 4, 5}) {
			t.Fatalf("envelopes_only stream, batch %d, sent entries %v", batch, sent)
		}
	}
	bs, err := tn.lc.StreamEntries(ctx, &pb.StreamEntriesRequest{Batch: 5000})
	if err == nil {
		_, err = bs.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "BAD_REQUEST" {
		t.Fatalf("batch 5000: %v, want INVALID_ARGUMENT BAD_REQUEST", err)
	}
}

func TestEmbeddedDescriptorsMatchTheAPI(t *testing.T) {
	// The reflection descriptors must describe the services this binary serves.
	for _, svc := range []string{"gpuledger.v1.LedgerService", "gpuledger.v1.AuditService", "gpuledger.v1.RegistryService", "gpuledger.v1.ClusterService"} {
		if !node.DescribesService(svc) {
			t.Errorf("embedded descriptors lack %s (run make generate)", svc)
		}
	}
}

func TestListFindings(t *testing.T) {
	tn := startNode(t, t.TempDir())
	ago := time.Now().Add(-40 * 24 * time.Hour)
	prev := tn.append(t, sign(event("GPU-LF", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil, func(e *pb.CustodyEvent) { e.OccurredAt = timestamppb.New(ago) }))).GetEntryHash()
	tn.append(t, sign(event("GPU-LF", pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", prev, func(e *pb.CustodyEvent) {
		e.Counterparty, e.OccurredAt = "eu-dist", timestamppb.New(ago.Add(time.Hour))
	})))
	r, err := tn.ac.ListFindings(t.Context(), &pb.ListFindingsRequest{Kinds: []pb.FindingKind{pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED}})
	if err != nil || len(r.GetFindings()) != 1 || r.GetFindings()[0].GetSerial() != "GPU-LF" {
		t.Fatalf("ListFindings(HANDOFF_UNCONFIRMED) = %v, %v", r, err)
	}
	// As of a day after shipping, the window has not run out.
	r, err = tn.ac.ListFindings(t.Context(), &pb.ListFindingsRequest{AsOf: timestamppb.New(ago.Add(24 * time.Hour))})
	if err != nil || len(r.GetFindings()) != 0 {
		t.Fatalf("ListFindings(as_of a day later) = %v, %v", r, err)
	}
	if _, err := tn.ac.ListFindings(t.Context(), &pb.ListFindingsRequest{Kinds: []pb.FindingKind{99}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListFindings(kind 99) = %v, want INVALID_ARGUMENT", err)
	}
	s, err := tn.lc.GetSerial(t.Context(), &pb.GetSerialRequest{Serial: "GPU-LF"})
	if err != nil || len(s.GetSerial().GetOpenFindings()) != 1 {
		t.Fatalf("GetSerial open findings = %v, %v", s.GetSerial().GetOpenFindings(), err)
	}
}

// TestNothingUnsignedReachesRaft: a client that is no participant cannot
// grow the raft log. Twenty batches of 1,000 unsigned envelopes, batches
// signed by a key the registry does not hold or with a signature that does
// not verify, an envelope over the size limit and a call over the byte
// limit are all refused before anything is proposed: the raft log's last
// index does not move, nor does the ledger. A valid write then moves both.
func TestNothingUnsignedReachesRaft(t *testing.T) {
	tn := startNode(t, t.TempDir())
	// A first write, after the leader's own no-op entry, so that only
	// writes move the raft index from here on.
	tn.append(t, sign(event("GPU-FIRST", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil)))
	before := tn.n.RaftLastIndex()
	junk := make([]*pb.Envelope, 1000)
	for i := range junk {
		junk[i] = &pb.Envelope{PayloadType: dsse.CustodyEventType, Payload: make([]byte, 8000)}
		junk[i].Payload[0] = byte(i)
	}
	for range 20 {
		r, err := tn.lc.AppendBatch(t.Context(), &pb.AppendBatchRequest{Envelopes: junk})
		if err != nil {
			t.Fatalf("AppendBatch of unsigned junk: %v", err)
		}
		for i, res := range r.GetResults() {
			if res.GetError().GetReason() != "NO_SIGNATURE" {
				t.Fatalf("junk %d: %v, want NO_SIGNATURE", i, res)
			}
		}
	}
	ghost, _ := keys.Generate("ghost-trading", nil, keys.Ed25519)
	stranger := sign(event("GPU-X", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil), ghost.Signers()...)
	forged := sign(event("GPU-X", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))
	forged.Signatures[0].Sig[0] ^= 1
	big := sign(event("GPU-Y", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil, func(e *pb.CustodyEvent) {
		e.Evidence = []*pb.Evidence{{Type: "application/octet-stream", Data: make([]byte, 70<<10)}}
	}))
	for _, c := range []struct {
		env    *pb.Envelope
		reason string
	}{{stranger, "UNKNOWN_KEY"}, {forged, "BAD_SIGNATURE"}, {big, "TOO_LARGE"}} {
		_, err := tn.lc.Append(t.Context(), &pb.AppendRequest{Envelope: c.env})
		if reasonOf(err) != c.reason {
			t.Errorf("Append: %v, want %s", err, c.reason)
		}
	}
	many := make([]*pb.Envelope, 140) // 140 × 60 KiB: over the 8 MiB a call, under gRPC's 9 MiB
	for i := range many {
		many[i] = sign(event(fmt.Sprintf("GPU-M%d", i), pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil, func(e *pb.CustodyEvent) {
			e.Evidence = []*pb.Evidence{{Type: "application/octet-stream", Data: make([]byte, 60<<10)}}
		}))
	}
	if _, err := tn.lc.AppendBatch(t.Context(), &pb.AppendBatchRequest{Envelopes: many}); status.Code(err) != codes.ResourceExhausted || reasonOf(err) != "TOO_LARGE" {
		t.Errorf("AppendBatch of %d bytes: %v, want RESOURCE_EXHAUSTED TOO_LARGE", 140*60<<10, err)
	}
	if got := tn.n.RaftLastIndex(); got != before {
		t.Fatalf("the raft log went from index %d to %d on refused writes", before, got)
	}
	if tn.n.Size() != 1 {
		t.Fatalf("the ledger has %d entries", tn.n.Size())
	}
	tn.append(t, sign(event("GPU-OK", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil)))
	if got := tn.n.RaftLastIndex(); got != before+1 || tn.n.Size() != 2 {
		t.Fatalf("after a valid write: raft index %d (want %d), %d entries", got, before+1, tn.n.Size())
	}
}

// openLeader opens a one-node cluster and waits until it leads.
func openLeader(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

package node_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"os"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/client"
	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// tlsNode is a node serving TLS on 127.0.0.1 with the given read scope,
// with a certificate from a CA made for the test.
type tlsNode struct {
	n     *node.Node
	addr  string
	ca    string
	caKey *auth.LocalCA
	files node.TLSFiles
	dir   string
}

func startTLSNode(t *testing.T, scope node.Scope) *tlsNode {
	return startTLSNodeOf(t, dev, scope, true)
}

// startTLSNodeOf is startTLSNode for a node of consortium c; without
// secure, the same node serves plaintext with read scope open.
func startTLSNodeOf(t testing.TB, c *consortium.Consortium, scope node.Scope, secure bool) *tlsNode {
	return startTLSNodeWith(t, c, scope, secure, nil)
}

// startTLSNodeWith is startTLSNodeOf with the node's configuration changed
// by mod (given the directory its files are in).
func startTLSNodeWith(t testing.TB, c *consortium.Consortium, scope node.Scope, secure bool, mod func(dir string, cfg *node.Config)) *tlsNode {
	t.Helper()
	dir := t.TempDir()
	ca, err := auth.NewLocalCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("node", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	files := node.TLSFiles{CertFile: filepath.Join(dir, "node.pem"), KeyFile: filepath.Join(dir, "node.key")}
	if err := auth.WritePEM(cert, files.CertFile, files.KeyFile); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := writeFile(caFile, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	nk, err := auth.ParseNodeKey(c.NodeKey)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig(c.NodeName, filepath.Join(dir, "data"))
	cfg.Genesis, cfg.NodeSigner, cfg.Listener, cfg.TLS, cfg.ReadScope = c.Genesis, nk, lis, &files, scope
	cfg.Logger = quietLogger()
	if !secure {
		cfg.TLS, cfg.ReadScope = nil, node.ScopeOpen
	}
	if mod != nil {
		mod(dir, &cfg)
	}
	n := openLeader(t, cfg)
	s := n.NewServer()
	go s.Serve(n.GRPCListener())
	t.Cleanup(func() {
		s.Stop()
		n.Close(context.Background())
	})
	return &tlsNode{n: n, addr: lis.Addr().String(), ca: caFile, caKey: ca, files: files, dir: dir}
}

// as dials the node as participant id (nil: no one), with a client
// certificate or, with token, per-call tokens.
func (tn *tlsNode) as(t *testing.T, id string, token bool) *grpc.ClientConn {
	t.Helper()
	o := client.Options{CACertFile: tn.ca, Token: token, LedgerID: dev.LedgerID}
	if id != "" {
		o.Identity = member(id).Keys
	}
	conn, err := client.Dial(tn.addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func wantReason(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || reasonOf(err) != reason {
		t.Fatalf("%s: got %v (%s), want %v %s", what, status.Code(err), err, code, reason)
	}
}

// TestScopedReads: under read scope scoped a participant reads the serials
// it has held, shipped or been shipped, from the entry at which it became
// party; a rival claim (a receipt it had no standing for) does not make it
// one; auditors read everything; proofs of what it may read verify.
func TestScopedReads(t *testing.T) {
	tn := startTLSNode(t, node.ScopeScoped)
	acme := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "acme-gpu", false))
	eu := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "eu-dist", false))
	euAudit := gpuledgerv1grpc.NewAuditServiceClient(tn.as(t, "eu-dist", false))
	us := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "us-dist", false))
	auditor := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "audit-office", false))
	ctx := t.Context()

	appendEnv := func(env *pb.Envelope) *pb.Receipt {
		t.Helper()
		r, err := acme.Append(ctx, &pb.AppendRequest{Envelope: env})
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		return r.GetReceipt()
	}
	m := sign(event("SC-1", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))
	appendEnv(m)
	appendEnv(sign(event("SC-OTHER", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil)))

	// Nobody: refused everything but health.
	anon := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "", false))
	_, err := anon.GetSerial(ctx, &pb.GetSerialRequest{Serial: "SC-1"})
	wantReason(t, "anonymous read", err, codes.Unauthenticated, node.ReasonAuthRequired)
	_, err = anon.Append(ctx, &pb.AppendRequest{Envelope: m})
	wantReason(t, "anonymous write", err, codes.Unauthenticated, node.ReasonAuthRequired)

	// Not yet party.
	_, err = eu.GetSerial(ctx, &pb.GetSerialRequest{Serial: "SC-1"})
	wantReason(t, "eu-dist reads acme's serial", err, codes.PermissionDenied, node.ReasonNotAParty)
	_, err = eu.GetSerial(ctx, &pb.GetSerialRequest{Serial: "NO-SUCH"})
	wantReason(t, "eu-dist reads a serial that does not exist", err, codes.PermissionDenied, node.ReasonNotAParty)
	_, err = euAudit.GetMapProof(ctx, &pb.GetMapProofRequest{Serial: "SC-1"})
	wantReason(t, "eu-dist asks for the map proof of acme's serial", err, codes.PermissionDenied, node.ReasonNotAParty)

	// acme ships to eu-dist: eu-dist is party from the SHIPPED entry on.
	ship := appendEnv(sign(event("SC-1", pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", entryHash(m), func(ev *pb.CustodyEvent) { ev.Counterparty = "eu-dist" })))
	// us-dist files a receipt it has no standing for (a rival claim): it
	// is accepted and flagged, and gives us-dist nothing to read.
	claim, err := us.Append(ctx, &pb.AppendRequest{Envelope: sign(event("SC-1", pb.EventType_EVENT_TYPE_RECEIVED, "us-dist", ship.GetEntryHash()))})
	if err != nil || len(claim.GetReceipt().GetFlags()) == 0 {
		t.Fatalf("rival claim: %v, flags %v", err, claim.GetReceipt().GetFlags())
	}
	_, err = us.GetSerial(ctx, &pb.GetSerialRequest{Serial: "SC-1"})
	wantReason(t, "a rival claimant reads the serial", err, codes.PermissionDenied, node.ReasonNotAParty)
	if _, err := us.GetEntry(ctx, &pb.GetEntryRequest{Key: &pb.GetEntryRequest_Index{Index: claim.GetReceipt().GetIndex()}}); err != nil {
		t.Fatalf("the claimant reads its own entry: %v", err)
	}

	st, err := eu.GetSerial(ctx, &pb.GetSerialRequest{Serial: "SC-1"})
	if err != nil {
		t.Fatalf("eu-dist, consignee, reads SC-1: %v", err)
	}
	// What the state says of the time before eu-dist became party is
	// withheld: acme's and us-dist's byte budgets (who appended); the rival
	// claim, made after, is shown.
	if len(st.GetSerial().GetBudgets()) != 0 || len(st.GetSerial().GetClaims()) != 1 {
		t.Fatalf("eu-dist sees budgets %v and claims %v of SC-1; want no budget of others and us-dist's claim", st.GetSerial().GetBudgets(), st.GetSerial().GetClaims())
	}
	if full, err := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "audit-office", false)).GetSerial(ctx, &pb.GetSerialRequest{Serial: "SC-1"}); err != nil || len(full.GetSerial().GetBudgets()) != 2 {
		t.Fatalf("the auditor sees budgets %v (%v), want acme's and us-dist's", full.GetSerial().GetBudgets(), err)
	}
	h, err := eu.ListSerialEvents(ctx, &pb.ListSerialEventsRequest{Serial: "SC-1"})
	if err != nil {
		t.Fatal(err)
	}
	if h.GetFirstPosition() != 1 || len(h.GetEntries()) != 2 || h.GetEntries()[0].GetIndex() != ship.GetIndex() {
		t.Fatalf("eu-dist's history of SC-1 starts at position %d with %d entries, want the SHIPPED entry on (position 1, 2 entries)", h.GetFirstPosition(), len(h.GetEntries()))
	}
	_, err = eu.GetEntry(ctx, &pb.GetEntryRequest{Key: &pb.GetEntryRequest_Index{Index: 0}})
	wantReason(t, "eu-dist reads the MANUFACTURED entry", err, codes.PermissionDenied, node.ReasonNotAParty)
	_, err = euAudit.GetInclusionProof(ctx, &pb.GetInclusionProofRequest{LeafIndex: 0})
	wantReason(t, "eu-dist asks for the MANUFACTURED entry's proof", err, codes.PermissionDenied, node.ReasonNotAParty)

	// What it may read it can prove, with checkpoints and proofs alone.
	p, err := euAudit.GetInclusionProof(ctx, &pb.GetInclusionProofRequest{LeafIndex: ship.GetIndex()})
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, ship.GetIndex(), p.GetCheckpoint().GetSize(), p.GetLeafHash(), p.GetProof().GetHashes(), p.GetCheckpoint().GetRootHash()); err != nil {
		t.Fatalf("the SHIPPED entry's proof does not verify: %v", err)
	}
	if _, err := euAudit.GetConsistencyProof(ctx, &pb.GetConsistencyProofRequest{OldSize: 1}); err != nil {
		t.Fatalf("consistency proofs are every participant's: %v", err)
	}

	ls, err := eu.ListSerials(ctx, &pb.ListSerialsRequest{})
	if err != nil || len(ls.GetSerials()) != 1 || ls.GetSerials()[0].GetSerial() != "SC-1" {
		t.Fatalf("eu-dist lists %v (%v), want SC-1 alone", ls.GetSerials(), err)
	}
	fs, err := euAudit.ListFindings(ctx, &pb.ListFindingsRequest{})
	if err != nil || len(fs.GetFindings()) == 0 {
		t.Fatalf("eu-dist sees no findings of its serial (%v)", err)
	}
	for _, f := range fs.GetFindings() {
		if f.GetSerial() != "SC-1" {
			t.Fatalf("eu-dist sees a finding of %s", f.GetSerial())
		}
	}
	if fs, err := gpuledgerv1grpc.NewAuditServiceClient(tn.as(t, "us-dist", false)).ListFindings(ctx, &pb.ListFindingsRequest{}); err != nil || len(fs.GetFindings()) != 0 {
		t.Fatalf("us-dist sees %d findings (%v), want none", len(fs.GetFindings()), err)
	}

	// Streaming everything is an auditor's.
	stream, err := eu.StreamEntries(ctx, &pb.StreamEntriesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantReason(t, "eu-dist streams every entry", err, codes.PermissionDenied, node.ReasonAuditorScope)
	stream, err = auditor.StreamEntries(ctx, &pb.StreamEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	if n != int(tn.n.Size()) {
		t.Fatalf("the auditor streamed %d entries of %d", n, tn.n.Size())
	}
}

// TestTokens: a participant authenticates with a signed token per call; a
// token replayed, for another method, too old, or by an unknown key is
// refused.
func TestTokens(t *testing.T) {
	tn := startTLSNode(t, node.ScopeAuthenticated)
	ctx := t.Context()
	viaToken := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "dc-frankfurt", true)) // hybrid: its Ed25519 key signs
	if _, err := viaToken.ListSerials(ctx, &pb.ListSerialsRequest{}); err != nil {
		t.Fatalf("a token-authenticated read: %v", err)
	}
	raw := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "", false))
	signer := member("eu-dist").Keys.Signers()[0]
	const method = "/gpuledger.v1.LedgerService/ListSerials"
	call := func(tok string) error {
		_, err := raw.ListSerials(metadata.AppendToOutgoingContext(ctx, auth.Header, tok), &pb.ListSerialsRequest{})
		return err
	}
	tok, err := auth.SignToken(signer, dev.LedgerID, method, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := call(tok); err != nil {
		t.Fatalf("a fresh token: %v", err)
	}
	wantReason(t, "the same token again", call(tok), codes.Unauthenticated, node.ReasonTokenReplayed)
	other, _ := auth.SignToken(signer, dev.LedgerID, "/gpuledger.v1.LedgerService/GetSerial", time.Now())
	wantReason(t, "a token for another method", call(other), codes.Unauthenticated, node.ReasonBadToken)
	old, _ := auth.SignToken(signer, dev.LedgerID, method, time.Now().Add(-10*time.Minute))
	wantReason(t, "a token ten minutes old", call(old), codes.Unauthenticated, node.ReasonBadToken)
	otherLedger, _ := auth.SignToken(signer, consortiumID("another"), method, time.Now())
	wantReason(t, "a token for another ledger", call(otherLedger), codes.Unauthenticated, node.ReasonBadToken)
	stranger, _ := auth.SignToken(strangerKey(t), dev.LedgerID, method, time.Now())
	wantReason(t, "a token by an unregistered key", call(stranger), codes.Unauthenticated, node.ReasonUnknownKey)
	wantReason(t, "a token that is not one", call("v1.nonsense"), codes.Unauthenticated, node.ReasonBadToken)
}

// TestPlaintextToTLSNode: a plaintext client of a node that serves TLS is
// told to use TLS.
func TestPlaintextToTLSNode(t *testing.T) {
	tn := startTLSNode(t, node.ScopeOpen)
	conn, err := client.Dial(tn.addr, client.Options{Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = gpuledgerv1grpc.NewAuditServiceClient(conn).GetCheckpoint(t.Context(), &pb.GetCheckpointRequest{})
	wantReason(t, "plaintext call", err, codes.FailedPrecondition, node.ReasonTLSRequired)
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o644) }

func consortiumID(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:])
}

func strangerKey(t *testing.T) keys.Signer {
	ks, err := keys.Generate("stranger", nil, keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	return ks.Signers()[0]
}

// servedSerial returns the serial number of the certificate the node
// serves to clients now.
func (tn *tlsNode) servedSerial(t *testing.T) string {
	t.Helper()
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(tn.ca)
	pool.AppendCertsFromPEM(b)
	c, err := tls.Dial("tcp", tn.addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestCertificateReload: a renewed certificate written over the node's
// files is served to the next connection without a restart; a file that
// does not load leaves the previous certificate served.
func TestCertificateReload(t *testing.T) {
	tn := startTLSNode(t, node.ScopeOpen)
	first := tn.servedSerial(t)
	renewed, err := tn.caKey.Issue("node", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the node looks at the files at most once a second
	if err := auth.WritePEM(renewed, tn.files.CertFile, tn.files.KeyFile); err != nil {
		t.Fatal(err)
	}
	want := renewed.Leaf
	if want == nil {
		want, _ = x509.ParseCertificate(renewed.Certificate[0])
	}
	deadline := time.Now().Add(5 * time.Second)
	for tn.servedSerial(t) != want.SerialNumber.String() {
		if time.Now().After(deadline) {
			t.Fatalf("the node still serves certificate %s, not the renewed %s", tn.servedSerial(t), want.SerialNumber)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if first == want.SerialNumber.String() {
		t.Fatal("the renewed certificate has the first one's serial")
	}
	// A broken file: the node keeps serving the renewed certificate.
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(tn.files.CertFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	if got := tn.servedSerial(t); got != want.SerialNumber.String() {
		t.Fatalf("after a broken certificate file the node serves %s, want the renewed %s", got, want.SerialNumber)
	}
}

// TestClientCA: with a client CA, a client without a certificate is
// refused at the handshake; one with a certificate from that CA, or over a
// registered participant key, gets in.
func TestClientCA(t *testing.T) {
	clientCA, err := auth.NewLocalCA("clients")
	if err != nil {
		t.Fatal(err)
	}
	tn := startTLSNodeWith(t, dev, node.ScopeOpen, true, func(dir string, cfg *node.Config) {
		f := filepath.Join(dir, "client-ca.pem")
		if err := writeFile(f, clientCA.CertPEM()); err != nil {
			t.Fatal(err)
		}
		cfg.TLS.ClientCAFile = f
	})
	call := func(o client.Options, more ...grpc.DialOption) error {
		o.CACertFile = tn.ca
		conn, err := client.Dial(tn.addr, o, more...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err = gpuledgerv1grpc.NewAuditServiceClient(conn).GetCheckpoint(ctx, &pb.GetCheckpointRequest{})
		return err
	}
	if err := call(client.Options{}); err == nil {
		t.Fatal("a client without a certificate got in")
	}
	if err := call(client.Options{Identity: member("eu-dist").Keys}); err != nil {
		t.Fatalf("a client with a certificate over a registered key: %v", err)
	}
	issued, err := clientCA.IssueClient("monitoring")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(tn.ca)
	pool.AppendCertsFromPEM(b)
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{issued}, MinVersion: tls.VersionTLS13})
	conn, err := grpc.NewClient(tn.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := gpuledgerv1grpc.NewAuditServiceClient(conn).GetCheckpoint(t.Context(), &pb.GetCheckpointRequest{}); err != nil {
		t.Fatalf("a client with a certificate from the client CA: %v", err)
	}
	stranger, err := auth.ParticipantCertificate(mustKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	creds = credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{stranger}, MinVersion: tls.VersionTLS13})
	conn2, err := grpc.NewClient(tn.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := gpuledgerv1grpc.NewAuditServiceClient(conn2).GetCheckpoint(ctx, &pb.GetCheckpointRequest{}); err == nil {
		t.Fatal("a client with a self-signed certificate over an unregistered key got in")
	}
}

func mustKeys(t *testing.T) *keys.KeySet {
	ks, err := keys.Generate("stranger", nil, keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestSuspendedCaller: a participant suspended by the regulator is refused
// at its next call on the connection it holds open.
func TestSuspendedCaller(t *testing.T) {
	tn := startTLSNode(t, node.ScopeAuthenticated)
	eu := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "eu-dist", false))
	if _, err := eu.ListSerials(t.Context(), &pb.ListSerialsRequest{}); err != nil {
		t.Fatal(err)
	}
	reg := gpuledgerv1grpc.NewLedgerServiceClient(tn.as(t, "export-regulator", false))
	env := new(pb.Envelope)
	if err := proto.Unmarshal(member("export-regulator").SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.Now(), Reason: "straw buyer",
		Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: "eu-dist"}}}), env); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Append(t.Context(), &pb.AppendRequest{Envelope: env}); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	_, err := eu.ListSerials(t.Context(), &pb.ListSerialsRequest{})
	wantReason(t, "a suspended participant's next call", err, codes.PermissionDenied, node.ReasonSuspended)
}

// TestMLDSATokens: a participant whose only key is ML-DSA-65 (which TLS
// cannot carry) authenticates with tokens, chosen by the client package.
func TestMLDSATokens(t *testing.T) {
	c, err := consortium.Build(consortium.DevWith(keys.MLDSA65), consortium.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tn := startTLSNodeOf(t, c, node.ScopeAuthenticated, true)
	conn, err := client.Dial(tn.addr, client.Options{CACertFile: tn.ca, Identity: c.Member("eu-dist").Keys, LedgerID: c.LedgerID})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := gpuledgerv1grpc.NewLedgerServiceClient(conn).ListSerials(t.Context(), &pb.ListSerialsRequest{}); err != nil {
		t.Fatalf("an ML-DSA-65 participant's read: %v", err)
	}
	if _, err := client.DialOptions(client.Options{CACertFile: tn.ca, Identity: c.Member("eu-dist").Keys}); err == nil {
		t.Fatal("tokens without a ledger id were not refused")
	}
}

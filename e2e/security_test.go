package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/client"
	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestTLSTour: "gpuledgerd dev" serves TLS with its development CA; a
// plaintext client is refused with a reason; grpcurl with -cacert (and a
// participant's -cert/-key) and the CLI with --cacert work; a client that
// does not trust the CA is told to give it.
func TestTLSTour(t *testing.T) {
	d := startDevTLS(t, t.TempDir())
	clients := filepath.Join(d.dir, "tls", "clients")
	if _, errOut, code := run(t, bin.cli, "--node", d.addr, "--plaintext", "checkpoint"); code == 0 || !strings.Contains(errOut, "TLS_REQUIRED") {
		t.Fatalf("a plaintext CLI call to a TLS node: exit %d\n%s", code, errOut)
	}
	if out, errOut, code := run(t, bin.grpcurl, "-plaintext", d.addr, "list"); code == 0 || !strings.Contains(out+errOut, "serves gRPC over TLS only") {
		t.Fatalf("grpcurl -plaintext to a TLS node: exit %d\n%s%s", code, out, errOut)
	}
	other := t.TempDir()
	otherCA := filepath.Join(other, "tls", "ca.pem")
	run(t, bin.daemon, "dev", "--data", other, "--nodes", "2") // another consortium's CA
	if _, errOut, code := run(t, bin.cli, "--node", d.addr, "--cacert", otherCA, "checkpoint"); code == 0 || !strings.Contains(errOut, "give the CA that issued the node's certificate") {
		t.Fatalf("a CLI that does not trust the node's CA: exit %d\n%s", code, errOut)
	}
	genesis := filepath.Join(d.dir, "genesis.json")
	out := d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "TLS-1", "--model", "H100", "--genesis", genesis)
	if !strings.HasPrefix(out, "accepted: entry 0") {
		t.Fatalf("submit over TLS:\n%s", out)
	}
	for _, call := range []struct {
		data string
		args []string
	}{
		{"", []string{"list"}},
		{"", []string{"describe", "gpuledger.v1.LedgerService"}},
		{`{"serial":"TLS-1"}`, []string{"gpuledger.v1.LedgerService/GetSerial"}},
		{`{"serial":"TLS-1","page_size":3}`, []string{"gpuledger.v1.LedgerService/ListSerialEvents"}},
		{"", []string{"gpuledger.v1.AuditService/GetCheckpoint"}},
		{"", []string{"gpuledger.v1.RegistryService/ListParticipants"}},
		{"", []string{"grpc.health.v1.Health/Check"}},
	} {
		for _, who := range [][]string{nil, {"-cert", filepath.Join(clients, "eu-dist.pem"), "-key", filepath.Join(clients, "eu-dist.key")}} {
			full := append([]string{"-cacert", d.ca}, who...)
			if call.data != "" {
				full = append(full, "-d", call.data)
			}
			full = append(append(full, d.addr), call.args...)
			if out, errOut, code := run(t, bin.grpcurl, full...); code != 0 || out == "" {
				t.Fatalf("grpcurl %v: exit %d\n%s%s", full, code, out, errOut)
			}
		}
	}
	if info, err := os.Stat(filepath.Join(clients, "eu-dist.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("client key mode: %v %v", info.Mode(), err)
	}
}

// TestScopedNode: a node with --read-scope scoped, through the real CLI and
// grpcurl: a participant reads the serials it has been party to and is
// refused another's (PERMISSION_DENIED NOT_A_PARTY); an auditor reads all;
// a key revoked while its connection is open is refused at its next call,
// and an open stream of a revoked key ends.
func TestScopedNode(t *testing.T) {
	d := startDevTLS(t, t.TempDir(), "--read-scope", "scoped")
	genesis := filepath.Join(d.dir, "genesis.json")
	clients := filepath.Join(d.dir, "tls", "clients")
	as := func(id string, args ...string) (string, string, int) {
		return run(t, bin.cli, append(append(d.cliArgs(), "--identity", d.key(id), "--genesis", genesis), args...)...)
	}
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "SCOPE-1", "--model", "H100", "--genesis", genesis)
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "SCOPE-2", "--model", "H100", "--genesis", genesis)
	d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "SCOPE-1", "--to", "eu-dist", "--genesis", genesis)

	if _, errOut, code := run(t, bin.cli, append(d.cliArgs(), "serial", "SCOPE-1")...); code == 0 || !strings.Contains(errOut, "AUTHENTICATION_REQUIRED") {
		t.Fatalf("an anonymous read: exit %d\n%s", code, errOut)
	}
	if out, errOut, code := as("eu-dist", "history", "SCOPE-1"); code != 0 || !strings.Contains(out, "SHIPPED") || strings.Contains(out, "MANUFACTURED") {
		t.Fatalf("eu-dist's history of SCOPE-1 (from the shipment on): exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := as("eu-dist", "verify", "SCOPE-1"); code != 0 || !strings.Contains(out, "OK SCOPE-1") || !strings.Contains(out, "from event 1 on") {
		t.Fatalf("eu-dist verifies SCOPE-1 from where it became party: exit %d\n%s%s", code, out, errOut)
	}
	passport := filepath.Join(t.TempDir(), "scope-1.passport")
	if out, errOut, code := as("eu-dist", "passport", "SCOPE-1", "--file", passport); code != 0 {
		t.Fatalf("eu-dist's passport of SCOPE-1: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := run(t, bin.cli, "verify", "--passport", passport, "--genesis", genesis); code != 0 || !strings.Contains(out, "OK passport of SCOPE-1: 1 entry") || !strings.Contains(out, "from event 1 on") {
		t.Fatalf("eu-dist's passport of SCOPE-1 verified offline: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := as("eu-dist", "passport", "SCOPE-2", "--file", passport); code == 0 || !strings.Contains(errOut, "NOT_A_PARTY") {
		t.Fatalf("eu-dist's passport of SCOPE-2: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := as("eu-dist", "serial", "SCOPE-2"); code == 0 || !strings.Contains(errOut, "PermissionDenied (NOT_A_PARTY)") {
		t.Fatalf("eu-dist reads SCOPE-2: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := as("eu-dist", "--token", "serial", "SCOPE-2"); code == 0 || !strings.Contains(errOut, "NOT_A_PARTY") {
		t.Fatalf("eu-dist reads SCOPE-2 with a token: exit %d\n%s", code, errOut)
	}
	grpcurl := func(id, data, method string) (string, int) {
		full := []string{"-cacert", d.ca, "-cert", filepath.Join(clients, id+".pem"), "-key", filepath.Join(clients, id+".key")}
		if data != "" {
			full = append(full, "-d", data)
		}
		out, errOut, code := run(t, bin.grpcurl, append(full, d.addr, method)...)
		return out + errOut, code
	}
	if out, code := grpcurl("eu-dist", `{"serial":"SCOPE-2"}`, "gpuledger.v1.LedgerService/GetSerial"); code == 0 || !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "has not been party to serial") {
		t.Fatalf("grpcurl as eu-dist, another's serial: exit %d\n%s", code, out)
	}
	if out, code := grpcurl("eu-dist", "", "gpuledger.v1.LedgerService/StreamEntries"); code == 0 || !strings.Contains(out, "streaming every entry needs an auditor") {
		t.Fatalf("grpcurl StreamEntries as eu-dist: exit %d\n%s", code, out)
	}
	if out, code := grpcurl("audit-office", "", "gpuledger.v1.LedgerService/StreamEntries"); code != 0 || strings.Count(out, `"entryHash"`) != 3 {
		t.Fatalf("grpcurl StreamEntries as the auditor: exit %d\n%s", code, out)
	}
	for _, serial := range []string{"SCOPE-1", "SCOPE-2"} {
		if out, errOut, code := as("audit-office", "verify", serial); code != 0 || !strings.Contains(out, "OK "+serial) || strings.Contains(out, "from event") {
			t.Fatalf("the auditor verifies %s whole: exit %d\n%s%s", serial, code, out, errOut)
		}
	}
	if out, errOut, code := as("audit-office", "verify", "--all"); code != 0 || !strings.HasPrefix(out, "OK: 3 entries") {
		t.Fatalf("the auditor verifies the whole log: exit %d\n%s%s", code, out, errOut)
	}

	// Revocation mid-session: eu-dist and the auditor hold connections open.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dial := func(id string) *grpc.ClientConn {
		ks, err := keys.ReadFile(d.key(id))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := client.Dial(d.addr, client.Options{CACertFile: d.ca, Identity: ks})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	eu := gpuledgerv1grpc.NewLedgerServiceClient(dial("eu-dist"))
	if _, err := eu.GetSerial(ctx, &pb.GetSerialRequest{Serial: "SCOPE-1"}); err != nil {
		t.Fatalf("eu-dist before the revocation: %v", err)
	}
	watch, err := gpuledgerv1grpc.NewLedgerServiceClient(dial("audit-office")).StreamEntries(ctx, &pb.StreamEntriesRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := watch.Recv(); err != nil {
			t.Fatalf("the auditor's stream: %v", err)
		}
	}
	revoke := func(id string) {
		t.Helper()
		ks, err := keys.ReadFile(d.key(id))
		if err != nil {
			t.Fatal(err)
		}
		out, errOut, code := as("export-regulator", "registry", "revoke-key", "--key", d.key("export-regulator"), "--participant", id,
			"--key-id", ks.PublicKeys()[0].ID(), "--reason", "key compromised")
		if code != 0 {
			t.Fatalf("revoke %s's key: exit %d\n%s%s", id, code, out, errOut)
		}
	}
	revoke("eu-dist")
	_, err = eu.GetSerial(ctx, &pb.GetSerialRequest{Serial: "SCOPE-1"})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "was revoked at entry") {
		t.Fatalf("eu-dist's next call on its open connection after the revocation: %v", err)
	}
	if _, errOut, code := as("eu-dist", "serial", "SCOPE-1"); code == 0 || !strings.Contains(errOut, "KEY_REVOKED") {
		t.Fatalf("eu-dist with a revoked key, a new connection: exit %d\n%s", code, errOut)
	}
	// The revocation itself reaches the auditor's stream; then its own.
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("the auditor's stream before its own revocation: %v", err)
	}
	revoke("audit-office")
	for {
		_, err := watch.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "was revoked") {
			t.Fatalf("the auditor's stream after its key was revoked ended with %v", err)
		}
		break
	}
}

// TestFakeReceipt: a server that answers every append with a receipt it
// made up ("accepted: entry 424242" with a checkpoint reading "forged"), or
// with a real checkpoint and a proof that is not the entry's, is caught by
// submit and import: the receipt does not verify, and the CLI says so and
// fails.
func TestFakeReceipt(t *testing.T) {
	d := startDev(t, t.TempDir()) // a real node, for a real checkpoint
	genesis := filepath.Join(d.dir, "genesis.json")
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "REAL-1", "--model", "H100", "--genesis", genesis)
	cpOut := d.cli(t, "checkpoint")
	g, err := os.ReadFile(genesis)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ledger.ParseGenesis(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, note, want string
	}{
		{"forged", "forged\n", "the node's receipt does not verify: its checkpoint"},
		// A real checkpoint, and the claim that our envelope is its entry 0
		// (it is REAL-1's).
		{"wrong proof", cpOut, "the node's receipt does not verify: entry 0 is not included"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := startFakeNode(t, parsed, d.ledgerID(t), tc.note)
			args := []string{"--node", fake, "--plaintext", "--genesis", genesis}
			out, errOut, code := run(t, bin.cli, append(args, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "FAKE-1", "--model", "H100")...)
			if code == 0 || strings.Contains(out, "accepted") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("submit to a fake node: exit %d\n%s%s", code, out, errOut)
			}
			file := filepath.Join(t.TempDir(), "events.jsonl")
			os.WriteFile(file, []byte(`{"serial":"FAKE-2","type":"EVENT_TYPE_MANUFACTURED","actor":"acme-gpu","model":"H100","occurredAt":"2026-03-01T09:00:00Z"}`+"\n"), 0o644)
			out, errOut, code = run(t, bin.cli, append(args, "import", file, "--key", d.key("acme-gpu"), "-q")...)
			if code == 0 || strings.Contains(out, "1 accepted") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("import to a fake node: exit %d\n%s%s", code, out, errOut)
			}
			// Without a genesis the CLI cannot check, and says so.
			_, errOut, _ = run(t, bin.cli, "--node", fake, "--plaintext", "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "FAKE-3", "--model", "H100")
			if !strings.Contains(errOut, "receipts are NOT verified") {
				t.Fatalf("submit without a genesis does not say its receipt is unverified:\n%s", errOut)
			}
		})
	}
}

// fakeNode answers appends with made-up receipts carrying the given
// checkpoint note, and the registry's participants from the genesis.
type fakeNode struct {
	gpuledgerv1grpc.UnimplementedLedgerServiceServer
	gpuledgerv1grpc.UnimplementedRegistryServiceServer
	gpuledgerv1grpc.UnimplementedAuditServiceServer
	g    *pb.Genesis
	id   string
	note string
}

func startFakeNode(t *testing.T, g *pb.Genesis, id, note string) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{g: g, note: note, id: id}
	s := grpc.NewServer()
	gpuledgerv1grpc.RegisterLedgerServiceServer(s, f)
	gpuledgerv1grpc.RegisterRegistryServiceServer(s, f)
	gpuledgerv1grpc.RegisterAuditServiceServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func (f *fakeNode) receipt() *pb.Receipt {
	return &pb.Receipt{Index: 424242, EntryHash: make([]byte, 32), AcceptedAt: timestamppb.Now(),
		Checkpoint:     &pb.Checkpoint{Note: f.note, Size: 424243},
		InclusionProof: &pb.InclusionProof{LeafIndex: 424242, TreeSize: 424243}}
}

func (f *fakeNode) Append(ctx context.Context, req *pb.AppendRequest) (*pb.AppendResponse, error) {
	return &pb.AppendResponse{Receipt: f.fix(f.receipt(), req.GetEnvelope())}, nil
}

func (f *fakeNode) AppendBatch(ctx context.Context, req *pb.AppendBatchRequest) (*pb.AppendBatchResponse, error) {
	out := &pb.AppendBatchResponse{}
	for _, env := range req.GetEnvelopes() {
		out.Results = append(out.Results, &pb.AppendResult{Result: &pb.AppendResult_Receipt{Receipt: f.fix(f.receipt(), env)}})
	}
	return out, nil
}

// fix makes the receipt's entry and leaf hashes those of the envelope, so
// that only the checkpoint or the proof is false; with a real checkpoint it
// claims the envelope is its entry 0.
func (f *fakeNode) fix(r *pb.Receipt, env *pb.Envelope) *pb.Receipt {
	b, _ := dsse.Marshal(env)
	h := sha256.Sum256(b)
	if f.note != "forged\n" {
		var size uint64
		fmt.Sscanf(strings.Split(f.note, "\n")[1], "%d", &size)
		r.Checkpoint.Size, r.InclusionProof.TreeSize = size, size
		r.Index, r.InclusionProof.LeafIndex = 0, 0
	}
	r.EntryHash = h[:]
	lh := ledger.LeafHash(r.GetIndex(), r.GetAcceptedAt().AsTime().UnixNano(), h)
	r.LeafHash = lh[:]
	return r
}

func (f *fakeNode) GetParticipant(ctx context.Context, req *pb.GetParticipantRequest) (*pb.GetParticipantResponse, error) {
	for _, p := range f.g.GetParticipants() {
		if p.GetId() == req.GetId() {
			return &pb.GetParticipantResponse{Participant: p}, nil
		}
	}
	return nil, status.Error(codes.NotFound, "no such participant")
}

func (f *fakeNode) GetCheckpoint(ctx context.Context, req *pb.GetCheckpointRequest) (*pb.GetCheckpointResponse, error) {
	return &pb.GetCheckpointResponse{Checkpoint: &pb.Checkpoint{Note: f.note, Origin: "gpuledger/" + f.id}}, nil
}

// TestWithholdingNode: a node that serves a serial's history without its
// newest entry (the hidden --test-withhold-last) is caught by verify: the
// serial map its checkpoint commits to names a later head and a larger
// count (WITHHELD, naming the serial). The same store served honestly
// passes, saying nothing was withheld.
func TestWithholdingNode(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	genesis := filepath.Join(dir, "genesis.json")
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "WH-1", "--model", "H100", "--genesis", genesis)
	d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "WH-1", "--to", "eu-dist", "--genesis", genesis)
	// The shipment to the front: the entry a colluding operator would hide.
	d.cli(t, "submit", "receive", "--key", d.key("eu-dist"), "--serial", "WH-1", "--genesis", genesis)
	// A registry change, which a passport must carry (its registry map proof).
	d.cli(t, "registry", "suspend", "--key", d.key("export-regulator"), "--participant", "rack-integrator", "--reason", "test", "--genesis", genesis)
	if out := d.cli(t, "verify", "--genesis", genesis, "WH-1"); !strings.Contains(out, "OK WH-1") || !strings.Contains(out, "nothing withheld") {
		t.Fatalf("verify against the honest node:\n%s", out)
	}
	d.stop()
	serve := func(extra ...string) *devNode {
		return startDaemon(t, dir, append([]string{"serve", "--data", filepath.Join(dir, "node"), "--genesis", genesis,
			"--node-key", filepath.Join(dir, "node.key")}, extra...)...)
	}
	w := serve("--test-withhold-last", "1")
	out, errOut, code := run(t, bin.cli, "--node", w.addr, "verify", "--genesis", genesis, "WH-1")
	if code == 0 || !strings.Contains(out+errOut, "WITHHELD") || !strings.Contains(out+errOut, "WH-1") || !strings.Contains(out+errOut, "3 events") {
		t.Fatalf("verify against a node withholding the last entry: exit %d\n%s%s", code, out, errOut)
	}
	passport := filepath.Join(t.TempDir(), "wh-1.passport")
	w.cli(t, "passport", "WH-1", "--file", passport)
	out, errOut, code = run(t, bin.cli, "verify", "--passport", passport, "--genesis", genesis)
	if code == 0 || !strings.Contains(out+errOut, "WITHHELD") || !strings.Contains(out+errOut, "WH-1") {
		t.Fatalf("a passport from a node withholding the last entry, verified offline: exit %d\n%s%s", code, out, errOut)
	}
	w.stop()
	h := serve()
	if out := h.cli(t, "verify", "--genesis", genesis, "WH-1"); !strings.Contains(out, "nothing withheld") {
		t.Fatalf("verify against the same store served honestly:\n%s", out)
	}
	h.cli(t, "passport", "WH-1", "--file", passport)
	if out, errOut, code := run(t, bin.cli, "verify", "--passport", passport, "--genesis", genesis); code != 0 || !strings.Contains(out, "nothing withheld") {
		t.Fatalf("the honest node's passport, verified offline: exit %d\n%s%s", code, out, errOut)
	}
}

// TestStaleMapNode runs a node whose operator signs an old serial map beside
// the new log: its checkpoints name the map of an earlier size, so that the
// newest events of every serial changed since look withheld from the map.
// verify --all, which rebuilds the map from the log, must name them; so must
// a run from scratch; the honest node passes again, resuming where the
// audit left off.
func TestStaleMapNode(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	genesis := filepath.Join(dir, "genesis.json")
	trust := filepath.Join(t.TempDir(), "trust")
	all := func(n *devNode, extra ...string) (verdict map[string]any, out string, code int) {
		t.Helper()
		out, errOut, code := run(t, bin.cli, append(n.cliArgs(), append([]string{"verify", "--all", "--genesis", genesis, "--trust-dir", trust, "-o", "json"}, extra...)...)...)
		if err := json.Unmarshal([]byte(out), &verdict); err != nil {
			t.Fatalf("verify --all %v: exit %d, not JSON: %v\n%s%s", extra, code, err, out, errOut)
		}
		return verdict, out, code
	}
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "SM-1", "--model", "H100", "--genesis", genesis)
	d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "SM-1", "--to", "eu-dist", "--genesis", genesis)
	v, out, code := all(d)
	if code != 0 || v["ok"] != true {
		t.Fatalf("verify --all against the honest node: exit %d\n%s", code, out)
	}
	old := uint64(v["checkpointSize"].(float64))
	d.cli(t, "submit", "receive", "--key", d.key("eu-dist"), "--serial", "SM-1", "--genesis", genesis)
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "SM-2", "--model", "H100", "--genesis", genesis)
	d.stop()
	serve := func(extra ...string) *devNode {
		return startDaemon(t, dir, append([]string{"serve", "--data", filepath.Join(dir, "node"), "--genesis", genesis,
			"--node-key", filepath.Join(dir, "node.key")}, extra...)...)
	}
	s := serve("--test-stale-map-size", fmt.Sprint(old))
	v, out, code = all(s)
	if code != 1 || v["ok"] != false || !strings.Contains(v["error"].(string), "WITHHELD") ||
		!strings.Contains(v["error"].(string), "SM-1") || !strings.Contains(v["error"].(string), "SM-2") || v["from"] != float64(old) {
		t.Fatalf("incremental verify --all against a node signing the map of size %d beside a longer log: exit %d\n%s", old, code, out)
	}
	// From scratch, with the stale checkpoint trusted already: no map
	// verified before to recognise, so the run names the serials the map
	// may misstate.
	v, out, code = all(s, "--from-scratch")
	if code != 1 || !strings.Contains(v["error"].(string), "misstates") || !strings.Contains(v["error"].(string), "SM-1") || v["from"] != nil {
		t.Fatalf("verify --all --from-scratch against the stale-map node: exit %d\n%s", code, out)
	}
	// With no audit behind it, the run still refuses the map and names the
	// serials it may misstate.
	fresh := filepath.Join(t.TempDir(), "trust")
	out, errOut, code := run(t, bin.cli, append(s.cliArgs(), "verify", "--all", "--genesis", genesis, "--trust-dir", fresh)...)
	if code != 1 || !strings.Contains(out, "FAILED") || !strings.Contains(out, "SM-1") {
		t.Fatalf("verify --all from a new trust dir against the stale-map node: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = run(t, bin.cli, append(s.cliArgs(), "verify", "--genesis", genesis, "--trust-dir", fresh, "SM-1")...)
	if code != 1 || !strings.Contains(out+errOut, "SM-1") || !strings.Contains(out+errOut, "map") {
		t.Fatalf("verify SM-1 against the stale-map node: exit %d\n%s%s", code, out, errOut)
	}
	s.stop()
	h := serve()
	v, out, code = all(h)
	if code != 0 || v["ok"] != true || v["entries"] != float64(0) {
		t.Fatalf("verify --all against the same store served honestly, resuming: exit %d\n%s", code, out)
	}
	h.cli(t, "submit", "ship", "--key", d.key("eu-dist"), "--serial", "SM-1", "--to", "us-dist", "--genesis", genesis)
	v, out, code = all(h)
	if code != 0 || v["ok"] != true || v["entries"] != float64(1) || v["mapSize"] != v["checkpointSize"] {
		t.Fatalf("verify --all after one more entry: exit %d\n%s", code, out)
	}
	v, out, code = all(h, "--from-scratch")
	if code != 0 || v["ok"] != true || v["entries"] != v["checkpointSize"] {
		t.Fatalf("verify --all --from-scratch against the honest node: exit %d\n%s", code, out)
	}
}

package simulate_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/internal/simulate"
	"github.com/gpuledger/gpuledger/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestSimulation plants every diversion pattern among 10,000 serials (1,000
// under the race detector, 600 with -short) and checks the node's findings
// against the ground truth: 100% recall and precision for every planted kind
// and no finding on a clean serial.
func TestSimulation(t *testing.T) {
	c, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{7})})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig(c.NodeName, t.TempDir())
	cfg.Genesis, cfg.NodeSigner, cfg.Logger = c.Genesis, c.NodeSigner, slog.New(slog.DiscardHandler)
	n, err := node.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := grpc.NewServer(node.ServerOptions()...)
	n.Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ks := map[string]*keys.KeySet{}
	for _, m := range c.Members {
		ks[m.Participant.GetId()] = m.Keys
	}
	serials := 10_000
	switch {
	case testing.Short():
		serials = 600
	case raceDetector:
		serials = 1_000 // every pattern still planted 3 times or more
	}
	truth, err := simulate.Run(ctx, conn, simulate.Config{Serials: serials, Seed: 42, Keys: ks, Now: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(truth.Clean)+len(truth.Expected) != serials || len(truth.Expected) < 11 {
		t.Fatalf("truth: %d clean, %d planted", len(truth.Clean), len(truth.Expected))
	}
	rep, err := simulate.Check(ctx, conn, truth)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, k := range rep.Kinds {
		kinds[k.Kind] = true
		t.Logf("%-24s planted %4d found %4d false %3d precision %.2f recall %.2f", k.Kind, k.Planted, k.Found, k.False, k.Precision, k.Recall)
		if k.Planted == 0 || k.Recall != 1 || k.False != 0 {
			t.Errorf("%s: planted %d, found %d, false %d", k.Kind, k.Planted, k.Found, k.False)
		}
	}
	for _, want := range []string{"HANDOFF_UNCONFIRMED", "RECEIVER_MISMATCH", "CUSTODY_BREAK", "SILENT", "RESTRICTED_DESTINATION",
		"LICENSE_MISSING", "UNREGISTERED_CONSIGNEE", "IMPOSSIBLE_TRAVEL", "ACTIVITY_AFTER_TERMINAL", "REPORTED_LOST", "LOCATION_MISMATCH"} {
		if !kinds[want] {
			t.Errorf("no %s planted", want)
		}
	}
	if len(rep.CleanWithFindings) != 0 {
		i := 0
		for s, k := range rep.CleanWithFindings {
			if i++; i > 5 {
				break
			}
			t.Errorf("clean serial %s raised %v", s, k)
		}
		t.Fatalf("%d clean serials raised findings", len(rep.CleanWithFindings))
	}
	if !rep.OK() {
		t.Fatal("the detectors do not match the ground truth")
	}
}

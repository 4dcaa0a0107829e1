package node_test

import (
	"context"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestLeaderClockRefused: the leader's clock is not law. Three nodes run
// over TCP on loopback; the leader's clock (a test hook) jumps 5 years
// ahead, then another leader's 5 years back. Each time the followers refuse
// the leader's batch before storing it: the write is never acknowledged,
// no honest node applies it or cosigns a checkpoint that includes it, an
// event dated 5 years ahead is never accepted, the followers distrust the
// leader (GetClusterStatus warns of it) and elect another, through which
// writes succeed again, dated by honest clocks.
func TestLeaderClockRefused(t *testing.T) {
	c, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{8}),
		MoreNodes: []consortium.NodeSpec{{Name: "node-2", Operator: "acme-gpu"}, {Name: "node-3", Operator: "eu-dist"}}})
	if err != nil {
		t.Fatal(err)
	}
	const size = 3
	var shift [size]atomic.Int64 // each node's clock offset, ns
	var lis []net.Listener
	var peers []node.Peer
	for i := range size {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, l)
		peers = append(peers, node.Peer{Name: c.Nodes[i].Name, Addr: l.Addr().String()})
	}
	var nodes []*node.Node
	var clients []gpuledgerv1grpc.LedgerServiceClient
	var status []gpuledgerv1grpc.ClusterServiceClient
	for i := range size {
		cfg := node.DefaultConfig(c.Nodes[i].Name, t.TempDir())
		cfg.Genesis, cfg.NodeSigner, cfg.Listener, cfg.Peers = c.Genesis, c.Nodes[i].Signer, lis[i], peers
		cfg.ApplyTimeout = 3 * time.Second
		cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(shift[i].Load())) }
		nodes = append(nodes, serveOn(t, cfg))
		conn, err := grpc.NewClient(peers[i].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, gpuledgerv1grpc.NewLedgerServiceClient(conn))
		status = append(status, gpuledgerv1grpc.NewClusterServiceClient(conn))
	}
	leader := func(not int) int {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			for i, n := range nodes {
				if i != not && n.IsLeader() {
					return i
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no leader other than node %d elected", not)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	acme := c.Member("acme-gpu")
	mfd := func(serial string, at time.Time) *pb.Envelope {
		ev := &pb.CustodyEvent{LedgerId: c.LedgerID, Serial: serial, Type: pb.EventType_EVENT_TYPE_MANUFACTURED, Actor: "acme-gpu",
			Model: "H100", Location: &pb.Location{Country: "TW", SiteId: acme.Participant.GetSites()[0].GetId()}, OccurredAt: timestamppb.New(at)}
		env, err := dsse.SignMessage(dsse.CustodyEventType, ev, acme.Keys.Signers()...)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	appendVia := func(i int, env *pb.Envelope) (*pb.AppendResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return clients[i].Append(ctx, &pb.AppendRequest{Envelope: env})
	}
	l := leader(-1)
	if _, err := appendVia(l, mfd("GPU-T0", time.Now())); err != nil {
		t.Fatalf("a write with honest clocks: %v", err)
	}
	settle := func() {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if nodes[0].Size() == nodes[1].Size() && nodes[1].Size() == nodes[2].Size() {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the nodes do not agree on the log size: %d %d %d", nodes[0].Size(), nodes[1].Size(), nodes[2].Size())
			}
		}
	}
	const fiveYears = 5 * 365 * 24 * time.Hour
	for round, offset := range []time.Duration{fiveYears, -fiveYears} {
		settle()
		l := leader(-1)
		sizes := make([]uint64, size)
		for i, n := range nodes {
			sizes[i] = n.Size()
		}
		shift[l].Store(int64(offset))
		// An event dated by the shifted clock: accepted only if the batch's
		// date were believed.
		r, err := appendVia(l, mfd("GPU-T"+string(rune('A'+round)), time.Now().Add(offset)))
		if err == nil {
			t.Fatalf("round %d: a write through the leader whose clock is off by %v was acknowledged: %v", round, offset, r)
		}
		next := leader(l)
		for i, n := range nodes {
			if i != l && n.Size() != sizes[i] {
				t.Errorf("round %d: honest node %d applied the shifted batch (%d entries, was %d)", round, i, n.Size(), sizes[i])
			}
		}
		st, err := status[next].GetClusterStatus(context.Background(), &pb.GetClusterStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.GetWarnings()) == 0 || !strings.Contains(strings.Join(st.GetWarnings(), "\n"), "distrusting node "+c.Nodes[l].Name) {
			t.Errorf("round %d: the new leader's status does not warn of the old one: %q", round, st.GetWarnings())
		}
		shift[l].Store(0)
		r, err = appendVia(next, mfd("GPU-U"+string(rune('A'+round)), time.Now()))
		if err != nil {
			t.Fatalf("round %d: a write through the new leader: %v", round, err)
		}
		if d := time.Since(r.GetReceipt().GetAcceptedAt().AsTime()).Abs(); d > time.Minute {
			t.Errorf("round %d: the new leader dated the write %v from now", round, d)
		}
		cp := r.GetReceipt().GetCheckpoint()
		for i, n := range nodes {
			if i == l {
				continue
			}
			for idx := range n.Size() {
				e, err := n.Ledger().Entry(context.Background(), idx)
				if err != nil {
					t.Fatal(err)
				}
				if d := time.Since(e.GetAcceptedAt().AsTime()).Abs(); d > time.Hour {
					t.Errorf("round %d: node %d holds entry %d dated %v from now (checkpoint size %d)", round, i, idx, d, cp.GetSize())
				}
			}
		}
	}
}

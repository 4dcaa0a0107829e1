package node_test

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestRaftHello: a node serves gRPC and raft on one address, and hands a
// connection to raft only with a hello signed by a node of the registry.
// Connections without one (garbage, a stranger's key, another ledger) are
// closed; gRPC on the same address goes on answering.
func TestRaftHello(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig(dev.NodeName, t.TempDir())
	cfg.Genesis, cfg.NodeSigner, cfg.Listener = dev.Genesis, dev.NodeSigner, l
	n := serveOn(t, cfg)

	skey, _, _ := note.GenerateKey(nil, "stranger")
	stranger, _ := note.NewSigner(skey)
	signed := func(signer note.Signer, text string) []byte {
		b, err := note.Sign(&note.Note{Text: text}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Now().Unix()
	dial := func(hello []byte) error {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := append([]byte{0xfe, byte(len(hello) >> 8), byte(len(hello))}, hello...)
		// The first byte of an AppendEntries request follows.
		c.Write(append(msg, 0))
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err = c.Read(make([]byte, 1))
		return err
	}
	// A node's own hello is admitted: raft waits for the rest of the request.
	valid := signed(dev.NodeSigner, "gpuledger raft\n"+n.Ledger().Origin()+"\n"+itoa(now)+"\n00\n")
	if err := dial(valid); !os.IsTimeout(err) {
		t.Fatalf("a registry node's hello: want raft to wait for the request, got %v", err)
	}
	for name, hello := range map[string][]byte{
		"garbage":        []byte("hello"),
		"stranger's key": signed(stranger, "gpuledger raft\n"+n.Ledger().Origin()+"\n"+itoa(now)+"\n00\n"),
		"other ledger":   signed(dev.NodeSigner, "gpuledger raft\ngpuledger/other\n"+itoa(now)+"\n00\n"),
		"old":            signed(dev.NodeSigner, "gpuledger raft\n"+n.Ledger().Origin()+"\n"+itoa(now-3600)+"\n00\n"),
	} {
		if err := dial(hello); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: the raft connection was not closed: %v", name, err)
		}
	}
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := gpuledgerv1grpc.NewClusterServiceClient(conn).GetClusterStatus(t.Context(), &pb.GetClusterStatusRequest{}); err != nil {
		t.Fatalf("gRPC on the node's address: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

package node_test

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestRaftHandshake: a node serves gRPC and raft on one address. A raft
// connection is TLS 1.3 in which both ends prove, with a hello signed by a
// registry node's key over this session's exported keying material, that
// they are nodes of the ledger. A registry node's hello gets the node's own
// hello back (checked here with x/mod's note package) and reaches raft;
// a connection without TLS, a stranger's hello, another ledger's, a hello
// bound to another session, and a reflected "accept" hello are closed. gRPC
// on the same address goes on answering.
func TestRaftHandshake(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig(dev.NodeName, t.TempDir())
	cfg.Genesis, cfg.NodeSigner, cfg.Listener = dev.Genesis, dev.NodeSigner, l
	n := serveOn(t, cfg)
	origin := n.Ledger().Origin()

	skey, _, _ := note.GenerateKey(nil, "stranger")
	stranger, _ := note.NewSigner(skey)
	nodeKey, err := note.NewVerifier(dev.NodeVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	hello := func(s note.Signer, role, origin string, ekm []byte) []byte {
		b, err := note.Sign(&note.Note{Text: "gpuledger raft " + role + "\n" + origin + "\n" + hex.EncodeToString(ekm) + "\n"}, s)
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	// handshake opens a raft connection with TLS and sends the hello mk
	// makes from the session's exported keying material. It returns the
	// error of reading the node's answer, and the answer.
	handshake := func(mk func(ekm []byte) []byte) ([]byte, error) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{0xfe})
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		tc.SetDeadline(time.Now().Add(2 * time.Second))
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		st := tc.ConnectionState()
		ekm, _ := st.ExportKeyingMaterial("gpuledger raft", nil, 32)
		tc.Write(mk(ekm))
		var size [2]byte
		if _, err := io.ReadFull(tc, size[:]); err != nil {
			return nil, err
		}
		answer := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(tc, answer); err != nil {
			return nil, err
		}
		m, err := note.Open(answer, note.VerifierList(nodeKey))
		if err != nil || m.Text != "gpuledger raft accept\n"+origin+"\n"+hex.EncodeToString(ekm)+"\n" {
			t.Fatalf("the node's hello: %v\n%s", err, answer)
		}
		// Raft now waits for a request: the connection stays open.
		tc.SetDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = tc.Read(make([]byte, 1))
		return answer, err
	}
	if _, err := handshake(func(ekm []byte) []byte { return hello(dev.NodeSigner, "dial", origin, ekm) }); !os.IsTimeout(err) {
		t.Fatalf("a registry node's hello: want raft to wait for the request, got %v", err)
	}
	for name, mk := range map[string]func([]byte) []byte{
		"stranger's key":   func(ekm []byte) []byte { return hello(stranger, "dial", origin, ekm) },
		"other ledger":     func(ekm []byte) []byte { return hello(dev.NodeSigner, "dial", "gpuledger/other", ekm) },
		"another session":  func([]byte) []byte { return hello(dev.NodeSigner, "dial", origin, make([]byte, 32)) },
		"reflected accept": func(ekm []byte) []byte { return hello(dev.NodeSigner, "accept", origin, ekm) },
		"garbage":          func([]byte) []byte { return []byte{0, 5, 'h', 'e', 'l', 'l', 'o'} },
	} {
		if answer, err := handshake(mk); err == nil || os.IsTimeout(err) {
			t.Errorf("%s: the node answered %q instead of closing (%v)", name, answer, err)
		}
	}
	// Without TLS: closed.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(append([]byte{0xfe}, hello(dev.NodeSigner, "dial", origin, make([]byte, 32))...))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); os.IsTimeout(err) { // EOF or a reset: closed
		t.Error("a raft connection without TLS was not closed")
	}
	c.Close()

	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := gpuledgerv1grpc.NewClusterServiceClient(conn).GetClusterStatus(t.Context(), &pb.GetClusterStatusRequest{}); err != nil {
		t.Fatalf("gRPC on the node's address: %v", err)
	}
}

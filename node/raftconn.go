package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Raft connections between nodes are encrypted and mutually authenticated
// with the node keys of the registry. The dialer sends raftMagic; then both
// run TLS 1.3 with throwaway self-signed certificates that neither checks,
// and each proves it holds a registry node's key by sending a hello: a
// signed note whose text is
//
//	gpuledger raft <role>      (role: "dial" or "accept")
//	<the ledger's checkpoint origin>
//	<hex of 32 bytes exported from this TLS session, label "gpuledger raft">
//
// framed as uint16be(length) and the note. The dialer sends first; each side
// checks the other's against the registry it has applied. The exported bytes
// bind the hello to this TLS session, so a hello cannot be replayed on
// another connection or relayed by someone in the middle (who would hold two
// sessions with different exports); the role keeps a hello from being
// reflected back to its sender.
type raftAuth struct {
	tls   *tls.Config
	sign  func(role string, ekm []byte) ([]byte, error)
	check func(role string, ekm, msg []byte) (peer string, err error)

	mu    sync.Mutex
	conns map[string]map[*peerConn]struct{} // open raft connections by peer
}

// peerConn is a raft connection to or from a named node.
type peerConn struct {
	net.Conn
	peer string
	auth *raftAuth
	once sync.Once
}

func (c *peerConn) Close() error {
	c.once.Do(func() {
		c.auth.mu.Lock()
		delete(c.auth.conns[c.peer], c)
		c.auth.mu.Unlock()
	})
	return c.Conn.Close()
}

// cut closes every raft connection to or from peer.
func (a *raftAuth) cut(peer string) int {
	a.mu.Lock()
	var cs []*peerConn
	for c := range a.conns[peer] {
		cs = append(cs, c)
	}
	a.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return len(cs)
}

const (
	roleDial   = "dial"
	roleAccept = "accept"
	ekmLabel   = "gpuledger raft"
	maxHello   = 4 << 10
)

// newRaftAuth makes the TLS configuration (a fresh Ed25519 certificate) for
// a node that signs and checks hellos with sign and check.
func newRaftAuth(sign func(string, []byte) ([]byte, error), check func(string, []byte, []byte) (string, error)) (*raftAuth, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * 365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("raft TLS certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		MinVersion:   tls.VersionTLS13,
		// Peers are authenticated by their hellos, not by certificates.
		InsecureSkipVerify: true,
	}
	return &raftAuth{tls: cfg, sign: sign, check: check, conns: make(map[string]map[*peerConn]struct{})}, nil
}

// accept runs the accepting side of the handshake on c (after raftMagic).
func (a *raftAuth) accept(c net.Conn) (net.Conn, error) {
	tc := tls.Server(c, a.tls)
	return a.handshake(tc, roleAccept, roleDial)
}

// dial runs the dialing side of the handshake on c (raftMagic sent).
func (a *raftAuth) dial(c net.Conn) (net.Conn, error) {
	tc := tls.Client(c, a.tls)
	return a.handshake(tc, roleDial, roleAccept)
}

func (a *raftAuth) handshake(tc *tls.Conn, mine, theirs string) (net.Conn, error) {
	tc.SetDeadline(time.Now().Add(sniffTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	st := tc.ConnectionState()
	ekm, err := st.ExportKeyingMaterial(ekmLabel, nil, 32)
	if err != nil {
		return nil, err
	}
	send := func() error {
		h, err := a.sign(mine, ekm)
		if err != nil {
			return err
		}
		_, err = tc.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(h))), h...))
		return err
	}
	var peer string
	receive := func() error {
		var n [2]byte
		if _, err := io.ReadFull(tc, n[:]); err != nil {
			return err
		}
		size := int(binary.BigEndian.Uint16(n[:]))
		if size > maxHello {
			return fmt.Errorf("hello of %d bytes", size)
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(tc, msg); err != nil {
			return err
		}
		peer, err = a.check(theirs, ekm, msg)
		return err
	}
	steps := []func() error{send, receive}
	if mine == roleAccept {
		steps = []func() error{receive, send}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	tc.SetDeadline(time.Time{})
	pc := &peerConn{Conn: tc, peer: peer, auth: a}
	a.mu.Lock()
	if a.conns[peer] == nil {
		a.conns[peer] = make(map[*peerConn]struct{})
	}
	a.conns[peer][pc] = struct{}{}
	a.mu.Unlock()
	return pc, nil
}

// helloText is the text a node signs for role on a session with export ekm.
func helloText(role, origin string, ekm []byte) string {
	return fmt.Sprintf("gpuledger raft %s\n%s\n%s\n", role, origin, hex.EncodeToString(ekm))
}

// signHello and checkHello are the node's side of raftAuth.
func (n *Node) signHello(role string, ekm []byte) ([]byte, error) {
	return note.Sign(&note.Note{Text: helloText(role, n.ledger.Origin(), ekm)}, n.cfg.NodeSigner)
}

func (n *Node) checkHello(role string, ekm, msg []byte) (string, error) {
	reg := n.ledger.Registry()
	m, err := note.Open(msg, nodeVerifiers(reg))
	if err != nil {
		return "", fmt.Errorf("hello not signed by a node of the registry (%s): %w", nodeNames(reg), err)
	}
	if m.Text != helloText(role, n.ledger.Origin(), ekm) {
		return "", fmt.Errorf("hello of %s is not a %q hello for this ledger and this connection", m.Sigs[0].Name, role)
	}
	peer := m.Sigs[0].Name
	if why := n.distrusted(peer); why != "" {
		return "", fmt.Errorf("node %s is distrusted: %s", peer, why)
	}
	return peer, nil
}

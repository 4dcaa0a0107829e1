package node

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger"
	"google.golang.org/grpc/credentials"
)

// TLSFiles are the PEM files a node serves TLS with. The node re-reads them
// when they change (checked at most once a second, at a handshake), so a
// renewed certificate takes effect without a restart; a file that does not
// parse is logged and the previous one kept.
type TLSFiles struct {
	// CertFile and KeyFile are the node's certificate (chain) and key, as
	// clients see it: issued by a CA the clients trust.
	CertFile, KeyFile string
	// ClientCAFile, if set, requires every client to present a certificate:
	// one issued by this CA, or one over a registered key (a participant's
	// or a node's, self-signed). Without it a client certificate is
	// optional.
	ClientCAFile string
}

// tlsSigner is what a node signer offers for TLS (an *auth.NodeKey).
type tlsSigner interface{ TLSSigner() crypto.Signer }

// reloader keeps a certificate and client CA pool read from files, and
// reads them again when their modification times change.
type reloader struct {
	files TLSFiles
	log   func(msg string, args ...any)

	mu      sync.Mutex
	checked time.Time
	stamp   string
	cert    *tls.Certificate
	cas     *x509.CertPool
}

func newReloader(f TLSFiles, log func(string, ...any)) (*reloader, error) {
	r := &reloader{files: f, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reloader) stampNow() string {
	var b bytes.Buffer
	for _, f := range []string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s %d %d;", f, st.ModTime().UnixNano(), st.Size())
		}
	}
	return b.String()
}

func (r *reloader) load() error {
	stamp := r.stampNow()
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s and key %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	var cas *x509.CertPool
	if r.files.ClientCAFile != "" {
		b, err := os.ReadFile(r.files.ClientCAFile)
		if err != nil {
			return fmt.Errorf("TLS client CA: %w", err)
		}
		cas = x509.NewCertPool()
		if !cas.AppendCertsFromPEM(b) {
			return fmt.Errorf("TLS client CA %s holds no PEM certificate", r.files.ClientCAFile)
		}
	}
	r.cert, r.cas, r.stamp = &cert, cas, stamp
	return nil
}

// current returns the certificate and client CAs, re-read if the files
// changed since they were last read.
func (r *reloader) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= time.Second {
		r.checked = now
		if s := r.stampNow(); s != r.stamp {
			old := r.stamp
			if err := r.load(); err != nil {
				r.stamp = s // log once per change, not at every handshake
				r.log("TLS files changed but do not load; serving the previous certificate", "err", err)
			} else if old != "" {
				r.log("TLS files changed: serving the new certificate", "cert", r.files.CertFile)
			}
		}
	}
	return r.cert, r.cas
}

// serverTLS returns the node's server TLS configuration: TLS 1.3 only; to a
// client that asks for auth.PeerServerName (another node), the certificate
// over this node's key; to others, the operator's certificate. Client
// certificates are asked for, and checked against the client CA when there
// is one (else only their key matters, at each call; see authenticate).
func (n *Node) serverTLS(r *reloader, nodeCert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2"},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h.ServerName == auth.PeerServerName {
				return &nodeCert, nil
			}
			c, _ := r.current()
			return c, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, cas := r.current()
			if cas == nil {
				return nil
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("this node requires a client certificate (issued by its client CA, or over a registered participant key)")
			}
			leaf := cs.PeerCertificates[0]
			if _, pub, ok := auth.KeyIDOfCertificate(leaf); ok && n.registeredKey(pub) {
				return nil
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: cas, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				return fmt.Errorf("client certificate: not issued by this node's client CA, nor over a registered key: %w", err)
			}
			return nil
		},
	}
}

// registeredKey reports whether pub is a node's key or a participant's
// Ed25519 key in the registry (active or not: the call says which).
func (n *Node) registeredKey(pub ed25519.PublicKey) bool {
	if n.ledger == nil {
		return false
	}
	reg := n.ledger.Registry()
	if n.nodeByKey(reg, pub) != "" {
		return true
	}
	k, _ := reg.Key(keys.KeyID(keys.Ed25519, pub))
	return k != nil
}

// nodeKeys are the registry's node keys (raw Ed25519 public key to node
// name), as read from the registry reg; authenticated calls look them up.
type nodeKeys struct {
	reg   *ledger.Registry
	names map[string]string
}

// nodeByKey returns the name of the registry's node whose key pub is, from
// keys parsed once per registry (a registry change replaces the registry).
func (n *Node) nodeByKey(reg *ledger.Registry, pub ed25519.PublicKey) string {
	nk := n.nodeKeys.Load()
	if nk == nil || nk.reg != reg {
		nk = &nodeKeys{reg: reg, names: make(map[string]string)}
		for _, nd := range reg.Nodes() {
			if k, err := auth.NodePublicKey(nd.GetVerifierKey()); err == nil {
				nk.names[string(k)] = nd.GetName()
			}
		}
		n.nodeKeys.Store(nk)
	}
	return nk.names[string(pub)]
}

// peerCredentials are the TLS credentials a node dials other nodes with:
// it presents its node-key certificate and asks for the other's, which must
// be a node key of the registry (joining, when this node has only the
// genesis, any: the join request holds no secret, and raft's own handshake
// authenticates the member afterwards).
func (n *Node) peerCredentials(nodeCert tls.Certificate) credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         auth.PeerServerName,
		Certificates:       []tls.Certificate{nodeCert},
		InsecureSkipVerify: true, // checked below: the key, not a CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the peer presented no certificate")
			}
			pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
			if !ok {
				return errors.New("the peer's certificate is not over an Ed25519 node key")
			}
			if n.ledger != nil && n.nodeByKey(n.ledger.Registry(), pub) == "" && n.cfg.Join == "" {
				return errors.New("the peer's certificate is not over the key of a node of the registry")
			}
			return nil
		},
	})
}

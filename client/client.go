// Package client connects to a gpuledger node: over TLS (the node's CA, or
// the system's), or in plaintext to a node on loopback; as a participant
// (a client certificate over its Ed25519 key, or per-call tokens), or as no
// one where the node's read scope is open. The gpuledger CLI uses it; so can
// any Go program.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Options say how to reach a node.
type Options struct {
	// CACertFile is the PEM file of the CA that issued the node's
	// certificate; empty for the system's CAs.
	CACertFile string
	// Plaintext connects without TLS. Only a node on loopback serves so.
	Plaintext bool
	// ServerName overrides the name checked in the node's certificate
	// (the address's host by default).
	ServerName string
	// Identity, if set, is the participant the client calls as.
	Identity *keys.KeySet
	// Token makes Identity authenticate with a per-call token rather than a
	// client certificate (always so for a key set without Ed25519). Tokens
	// need LedgerID.
	Token bool
	// LedgerID is the ledger's id (hex SHA-256 of its genesis), which
	// tokens are bound to.
	LedgerID string
}

// DialOptions returns the grpc.DialOptions for o.
func DialOptions(o Options) ([]grpc.DialOption, error) {
	if o.Plaintext {
		if o.CACertFile != "" {
			return nil, errors.New("a CA certificate is for TLS: give it or plaintext, not both")
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: o.ServerName}
	if o.CACertFile != "" {
		b, err := os.ReadFile(o.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("CA certificate: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("CA certificate %s holds no PEM certificate", o.CACertFile)
		}
	}
	opts := []grpc.DialOption{}
	if o.Identity != nil {
		s, hasEd := auth.ParticipantSigner(o.Identity)
		if hasEd && !o.Token {
			cert, err := auth.SelfSigned(s, o.Identity.Participant)
			if err != nil {
				return nil, err
			}
			cfg.Certificates = []tls.Certificate{cert}
		} else {
			if o.LedgerID == "" {
				return nil, errors.New("authenticating with tokens needs the ledger id: give the genesis (--genesis or GPULEDGER_GENESIS)")
			}
			signer := o.Identity.Signers()[0] // Ed25519 first in a hybrid set
			opts = append(opts, grpc.WithPerRPCCredentials(tokens{s: signer, ledger: o.LedgerID}))
		}
	}
	return append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg))), nil
}

// Dial connects to the node at addr (host:port) as o says.
func Dial(addr string, o Options, more ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts, err := DialOptions(o)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, append(opts, more...)...)
}

// IsLoopback reports whether addr's host is a loopback address or
// "localhost".
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tokens signs a gpuledger-auth token for every call.
type tokens struct {
	s      keys.Signer
	ledger string
}

func (t tokens) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, errors.New("gpuledger token: no method in the call's context")
	}
	tok, err := auth.SignToken(t.s, t.ledger, ri.Method, time.Now())
	if err != nil {
		return nil, err
	}
	return map[string]string{auth.Header: tok}, nil
}

func (tokens) RequireTransportSecurity() bool { return true }

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/crypto/keys"
)

// devHosts are the names a development node's certificate is good for.
var devHosts = []string{"127.0.0.1", "::1", "localhost"}

// ensureDevTLS gives a development consortium in dir what it needs to serve
// TLS on loopback, unless it has it: a local CA (DIR/tls/ca.pem, which the
// CLI and grpcurl are given to trust; its key is not kept), a certificate
// for each node (DIR/tls/<node>.pem and .key) and, for grpcurl's -cert and
// -key, a client certificate over each participant's Ed25519 key
// (DIR/tls/clients/<participant>.pem and .key). Keys are mode 0600.
func ensureDevTLS(dir string, nodes []string) error {
	tlsDir := filepath.Join(dir, "tls")
	if _, err := os.Stat(filepath.Join(tlsDir, "ca.pem")); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tlsDir, "clients"), 0o700); err != nil {
		return err
	}
	ca, err := auth.NewLocalCA("gpuledger development CA (" + filepath.Base(dir) + ")")
	if err != nil {
		return err
	}
	for _, n := range nodes {
		c, err := ca.Issue(n, devHosts)
		if err != nil {
			return err
		}
		if err := auth.WritePEM(c, filepath.Join(tlsDir, n+".pem"), filepath.Join(tlsDir, n+".key")); err != nil {
			return err
		}
	}
	keyFiles, err := filepath.Glob(filepath.Join(dir, "keys", "*.key"))
	if err != nil {
		return err
	}
	for _, f := range keyFiles {
		ks, err := keys.ReadFile(f)
		if err != nil {
			return err
		}
		c, err := auth.ParticipantCertificate(ks)
		if err != nil {
			continue // no Ed25519 key: tokens only
		}
		id := strings.TrimSuffix(filepath.Base(f), ".key")
		if err := auth.WritePEM(c, filepath.Join(tlsDir, "clients", id+".pem"), filepath.Join(tlsDir, "clients", id+".key")); err != nil {
			return err
		}
	}
	// The CA certificate last: its presence means the set is complete.
	if err := os.WriteFile(filepath.Join(tlsDir, "ca.pem"), ca.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(tlsDir, "ca.pem"), err)
	}
	return nil
}

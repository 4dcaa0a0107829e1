// Package auth holds how a gpuledger client proves who it is to a node, and
// how nodes prove it to each other, without a certificate authority.
//
// An identity is a key of the registry: a participant's Ed25519 key, or a
// node's checkpoint-signing key. A client shows it in one of two ways:
//
//   - mutual TLS with a self-signed certificate over the key (SelfSigned):
//     the node maps the certificate's public key to the registry's key id,
//     so no CA is needed and nothing but the key matters (names, dates and
//     issuers in the certificate are ignored);
//   - a per-call token (the gpuledger-auth header, Token), for clients that
//     cannot present a client certificate, or whose key is ML-DSA-65 (which
//     TLS cannot carry): a signature by any active key of the participant
//     over the ledger id, the full method name, the time and a nonce.
//
// The node checks the key against the registry it has applied at every call,
// so a revoked key or a suspended participant is refused at its next call,
// on a connection opened before the change too.
package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"golang.org/x/mod/sumdb/note"
)

// PeerServerName is the TLS server name one node asks for when it dials
// another: the node answers with a certificate over its node key (not its
// operator's web certificate), which the dialer checks against the registry.
const PeerServerName = "node.gpuledger.invalid"

// SelfSigned returns a TLS certificate over key (an Ed25519 key), signed by
// itself, naming name. Only its public key is ever checked.
func SelfSigned(key crypto.Signer, name string) (tls.Certificate, error) {
	if _, ok := key.Public().(ed25519.PublicKey); !ok {
		return tls.Certificate{}, errors.New("self-signed certificate: the key is not Ed25519")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"gpuledger"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{PeerServerName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// NodeKey is a node's signed-note key that can also sign for TLS, as the
// node's certificate towards other nodes. Parse one with ParseNodeKey.
type NodeKey struct {
	note.Signer
	tls ed25519.PrivateKey
}

// TLSSigner returns the key as a crypto.Signer (Ed25519).
func (k *NodeKey) TLSSigner() crypto.Signer { return k.tls }

// ParseNodeKey parses a signed-note private key, the text of a node key
// file: PRIVATE+KEY+<name>+<hash>+<base64 of 0x01 and the Ed25519 seed>.
func ParseNodeKey(text string) (*NodeKey, error) {
	s, err := note.NewSigner(text)
	if err != nil {
		return nil, err
	}
	parts := strings.SplitN(text, "+", 5) // the key's base64 may hold '+'
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("the node key is not an Ed25519 signed-note key")
	}
	return &NodeKey{Signer: s, tls: ed25519.NewKeyFromSeed(raw[1:])}, nil
}

// NodePublicKey returns the Ed25519 public key of a signed-note verifier key.
func NodePublicKey(verifierKey string) (ed25519.PublicKey, error) {
	parts := strings.SplitN(verifierKey, "+", 3) // the key's base64 may hold '+'

	if len(parts) != 3 {
		return nil, fmt.Errorf("node verifier key %q: want <name>+<hash>+<key>", verifierKey)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return nil, fmt.Errorf("node verifier key of %s is not an Ed25519 signed-note key", parts[0])
	}
	return ed25519.PublicKey(raw[1:]), nil
}

// ParticipantSigner returns the Ed25519 key of a key set (hybrid sets
// authenticate with their Ed25519 half), or false when the set has none (an
// ML-DSA-65 key authenticates with tokens only).
func ParticipantSigner(ks *keys.KeySet) (crypto.Signer, bool) {
	k, ok := ks.Ed25519()
	if !ok {
		return nil, false
	}
	return k, true
}

// ParticipantCertificate is the self-signed client certificate of a key
// set's Ed25519 key, named after its participant.
func ParticipantCertificate(ks *keys.KeySet) (tls.Certificate, error) {
	s, ok := ParticipantSigner(ks)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("%v has no Ed25519 key, which a TLS client certificate needs: authenticate with tokens (its ML-DSA-65 key signs them)", ks)
	}
	return SelfSigned(s, ks.Participant)
}

// KeyIDOfCertificate returns the registry key id of a certificate's public
// key when it is Ed25519, the form participant keys have.
func KeyIDOfCertificate(c *x509.Certificate) (string, ed25519.PublicKey, bool) {
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return "", nil, false
	}
	return keys.KeyID(keys.Ed25519, pub), pub, true
}

// Header is the metadata key of a per-call token.
const Header = "gpuledger-auth"

// TokenLifetime is how far a token's time may be from the node's clock.
const TokenLifetime = 2 * time.Minute

// Token is a parsed per-call token:
//
//	v1.<key id>.<unix milliseconds>.<nonce: 32 hex digits>.<base64url signature>
//
// The signature is by the key over TokenMessage.
type Token struct {
	KeyID string
	At    time.Time
	Nonce string
	Sig   []byte
}

// TokenMessage is what a token signs.
func TokenMessage(ledgerID, method, keyID string, at time.Time, nonce string) []byte {
	return []byte("gpuledger-auth v1\n" + ledgerID + "\n" + method + "\n" + keyID + "\n" +
		strconv.FormatInt(at.UnixMilli(), 10) + "\n" + nonce + "\n")
}

// SignToken returns a token for one call of method on ledgerID.
func SignToken(s keys.Signer, ledgerID, method string, now time.Time) (string, error) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return "", err
	}
	nonce := hex.EncodeToString(n[:])
	now = time.UnixMilli(now.UnixMilli())
	sig := s.Sign(TokenMessage(ledgerID, method, s.KeyID(), now, nonce))
	return "v1." + s.KeyID() + "." + strconv.FormatInt(now.UnixMilli(), 10) + "." + nonce + "." +
		base64.RawURLEncoding.EncodeToString(sig), nil
}

// ParseToken parses a token's text (not its signature's validity).
func ParseToken(v string) (*Token, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 5 || parts[0] != "v1" {
		return nil, errors.New("want v1.<key id>.<unix ms>.<nonce>.<signature>")
	}
	if len(parts[1]) != 32 || !isHex(parts[1]) {
		return nil, errors.New("the key id is not 32 hex digits")
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return nil, errors.New("the time is not Unix milliseconds")
	}
	if len(parts[3]) != 32 || !isHex(parts[3]) {
		return nil, errors.New("the nonce is not 32 hex digits")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[4])
	if err != nil || len(sig) == 0 || len(sig) > 8192 {
		return nil, errors.New("the signature is not unpadded base64url")
	}
	return &Token{KeyID: parts[1], At: time.UnixMilli(ms), Nonce: parts[3], Sig: sig}, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// WritePEM writes a certificate (PEM, mode 0644) and its private key
// (PKCS #8 PEM, mode 0600, never overwritten by another file's mode).
func WritePEM(c tls.Certificate, certPath, keyPath string) error {
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return fmt.Errorf("write %s: %w", keyPath, err)
	}
	var certs []byte
	for _, d := range c.Certificate {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, certs, 0o644)
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LocalCA is a certificate authority for a development consortium on one
// machine: it issues node certificates for loopback names.
type LocalCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	der  []byte
}

// NewLocalCA makes a new CA (ECDSA P-256, ten years).
func NewLocalCA(name string) (*LocalCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name, Organization: []string{"gpuledger development"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &LocalCA{cert: cert, key: key, der: der}, nil
}

// CertPEM is the CA's certificate, for clients to trust.
func (ca *LocalCA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}

// IssueClient returns a client certificate naming name.
func (ca *LocalCA) IssueClient(name string) (tls.Certificate, error) {
	return ca.issue(name, nil, x509.ExtKeyUsageClientAuth)
}

// Issue returns a server certificate for hosts (DNS names or IP addresses).
func (ca *LocalCA) Issue(name string, hosts []string) (tls.Certificate, error) {
	return ca.issue(name, hosts, x509.ExtKeyUsageServerAuth)
}

func (ca *LocalCA) issue(name string, hosts []string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(2, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.der}, PrivateKey: key, Leaf: leaf}, nil
}

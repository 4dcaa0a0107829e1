package auth_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"golang.org/x/mod/sumdb/note"
)

// TestNodeKey: the TLS signer parsed from a node key file is the same
// Ed25519 key as its signed-note verifier key (x/mod's note is the judge),
// for keys whose base64 holds '+'.
func TestNodeKey(t *testing.T) {
	plus := 0
	for i := 0; i < 200 && plus < 20; i++ {
		skey, vkey, err := note.GenerateKey(rand.Reader, "node-x")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(skey, "+") > 4 {
			plus++
		}
		k, err := auth.ParseNodeKey(skey)
		if err != nil {
			t.Fatalf("ParseNodeKey(%q...): %v", skey[:24], err)
		}
		msg := []byte("gpuledger node key test\n")
		sig, err := k.TLSSigner().Sign(rand.Reader, msg, crypto.Hash(0))
		if err != nil {
			t.Fatal(err)
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Verify(msg, sig) {
			t.Fatalf("the TLS signer of %s does not sign as its verifier key", vkey)
		}
		pub, err := auth.NodePublicKey(vkey)
		if err != nil || !pub.Equal(k.TLSSigner().Public()) {
			t.Fatalf("NodePublicKey(%s): %v", vkey, err)
		}
	}
	if plus == 0 {
		t.Fatal("no key with '+' in its base64 was tried")
	}
}

// TestParticipantCertificate: the self-signed certificate over a key set's
// Ed25519 key parses and verifies with crypto/x509, carries that key (so
// its key id is the registry's), and a set without Ed25519 has none.
func TestParticipantCertificate(t *testing.T) {
	ks, err := keys.Generate("eu-dist", nil, keys.Ed25519, keys.MLDSA65)
	if err != nil {
		t.Fatal(err)
	}
	c, err := auth.ParticipantCertificate(ks)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Fatalf("the certificate's self-signature: %v", err)
	}
	id, _, ok := auth.KeyIDOfCertificate(leaf)
	if !ok || id != ks.PublicKeys()[0].ID() {
		t.Fatalf("the certificate's key id is %q, the set's Ed25519 key's %q", id, ks.PublicKeys()[0].ID())
	}
	mldsa, _ := keys.Generate("pq-only", nil, keys.MLDSA65)
	if _, err := auth.ParticipantCertificate(mldsa); err == nil || !strings.Contains(err.Error(), "tokens") {
		t.Fatalf("an ML-DSA-65 set's certificate: %v", err)
	}
}

// TestParseToken: a token signed by SignToken parses back; every malformed
// one is refused.
func TestParseToken(t *testing.T) {
	ks, _ := keys.Generate("eu-dist", nil, keys.Ed25519)
	s := ks.Signers()[0]
	now := time.Now()
	tok, err := auth.SignToken(s, "ab", "/gpuledger.v1.LedgerService/GetSerial", now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := keys.NewVerifier(keys.Ed25519, ks.PublicKeys()[0].Key)
	if p.KeyID != s.KeyID() || p.At.UnixMilli() != now.UnixMilli() || !v.Verify(auth.TokenMessage("ab", "/gpuledger.v1.LedgerService/GetSerial", p.KeyID, p.At, p.Nonce), p.Sig) {
		t.Fatalf("parsed %+v", p)
	}
	parts := strings.Split(tok, ".")
	for _, bad := range []string{"", "v1", "v2." + strings.Join(parts[1:], "."), strings.Join(parts[:4], "."),
		"v1.XYZ." + strings.Join(parts[2:], "."), "v1." + parts[1] + ".soon." + strings.Join(parts[3:], "."),
		"v1." + parts[1] + "." + parts[2] + ".short." + parts[4], strings.Join(parts[:4], ".") + ".!!!", tok + ".x"} {
		if _, err := auth.ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

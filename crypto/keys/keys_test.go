package keys_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuledger/gpuledger/crypto/keys"
)

func TestKeyID(t *testing.T) {
	pub := bytes.Repeat([]byte{7}, 32)
	h := sha256.Sum256(append([]byte("Ed25519\x00"), pub...))
	if got, want := keys.KeyID(keys.Ed25519, pub), hex.EncodeToString(h[:16]); got != want {
		t.Fatalf("KeyID = %s, want %s", got, want)
	}
	if keys.KeyID(keys.Ed25519, pub) == keys.KeyID(keys.MLDSA65, pub) {
		t.Fatal("key id does not depend on the scheme")
	}
}

func TestCacheVerifierFor(t *testing.T) {
	// A key looked up by the id its holder gives: the cached parse when the
	// id and the bytes agree, and never another key's, whatever id is given.
	a, _ := keys.Generate("a", nil, keys.Ed25519, keys.MLDSA65)
	b, _ := keys.Generate("b", nil, keys.Ed25519)
	var c keys.Cache
	for i, pk := range a.PublicKeys() {
		v, err := c.Verifier(pk.Scheme, pk.Key)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := c.VerifierFor(pk.ID(), pk.Scheme, pk.Key); err != nil || again != v {
			t.Fatalf("%s: VerifierFor its own id = %v, %v; want the cached key", pk.Scheme, again, err)
		}
		sig := a.Signers()[i].Sign([]byte("m"))
		// b's key under a's id: b's key, parsed from its bytes.
		other := b.PublicKeys()[0]
		w, err := c.VerifierFor(pk.ID(), other.Scheme, other.Key)
		if err != nil || w == v || w.KeyID() != other.ID() || w.Verify([]byte("m"), sig) {
			t.Fatalf("%s: another key's bytes under this id gave %v (id %s), %v", pk.Scheme, w, w.KeyID(), err)
		}
		if !w.Verify([]byte("m"), b.Signers()[0].Sign([]byte("m"))) {
			t.Fatal("the other key does not verify its own signature")
		}
		// The same bytes under the other scheme: not the cached key.
		if _, err := c.VerifierFor(pk.ID(), otherScheme(pk.Scheme), pk.Key); err == nil {
			t.Fatalf("%s key's bytes taken as a key of the other scheme", pk.Scheme)
		}
	}
}

func otherScheme(s keys.Scheme) keys.Scheme {
	if s == keys.Ed25519 {
		return keys.MLDSA65
	}
	return keys.Ed25519
}

func TestKeyFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for i, schemes := range [][]keys.Scheme{{keys.Ed25519}, {keys.MLDSA65}, {keys.Ed25519, keys.MLDSA65}} {
		ks, err := keys.Generate("acme-gpu", rand.NewChaCha8([32]byte{byte(i)}), schemes...)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, ks.Signers()[0].KeyID()+".key")
		if err := ks.WriteFile(path); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
		}
		if err := ks.WriteFile(path); err == nil {
			t.Fatal("WriteFile overwrote an existing key file")
		}
		got, err := keys.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got.Participant != "acme-gpu" || got.Hybrid() != (len(schemes) == 2) {
			t.Fatalf("ReadFile = %v", got)
		}
		for i, pk := range ks.PublicKeys() {
			if !bytes.Equal(got.PublicKeys()[i].Key, pk.Key) {
				t.Fatalf("public key %d differs after round trip", i)
			}
			line := pk.String()
			back, err := keys.ParsePublicKey(line)
			if err != nil || !bytes.Equal(back.Key, pk.Key) || back.Scheme != pk.Scheme || strings.Contains(line, "\n") {
				t.Fatalf("ParsePublicKey(%q) = %v, %v", line, back, err)
			}
		}
		// Nothing secret in its printed form.
		if s := ks.String(); strings.Contains(s, string(ks.MarshalText()[40:60])) {
			t.Fatalf("String() leaks key material: %s", s)
		}
		os.Chmod(path, 0o644)
		if _, err := keys.ReadFile(path); !errors.Is(err, keys.ErrKeyFileMode) {
			t.Fatalf("ReadFile(0644) = %v, want ErrKeyFileMode", err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{
		"",
		"gpuledger-private-key v2\nEd25519 AAAA\n",
		"gpuledger-private-key v1\n",
		"gpuledger-private-key v1\nRSA AAAA\n",
		"gpuledger-private-key v1\nEd25519 not-base64!\n",
		"gpuledger-private-key v1\nEd25519 AAAA\n",
		"gpuledger-private-key v1\nEd25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nEd25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	} {
		if _, err := keys.ParseKeySet([]byte(bad)); err == nil {
			t.Errorf("ParseKeySet(%q) succeeded", bad)
		}
	}
	for _, bad := range []string{"", "Ed25519", "Ed25519:", "RSA:AAAA", "Ed25519:AAAA", "ML-DSA-65:" + strings.Repeat("A", 44)} {
		if _, err := keys.ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
	}
}

func TestVerifierRejectsWrongSizes(t *testing.T) {
	for _, s := range keys.Schemes {
		ks, _ := keys.Generate("p", nil, s)
		pk := ks.PublicKeys()[0]
		var c keys.Cache
		v, err := c.Verifier(pk.Scheme, pk.Key)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := c.Verifier(pk.Scheme, pk.Key); again != v {
			t.Error("cache parsed the key twice")
		}
		sig := ks.Signers()[0].Sign([]byte("m"))
		if !v.Verify([]byte("m"), sig) {
			t.Fatalf("%s: valid signature rejected", s)
		}
		for _, bad := range [][]byte{nil, sig[:len(sig)-1], append(bytes.Clone(sig), 0)} {
			if v.Verify([]byte("m"), bad) {
				t.Fatalf("%s: signature of %d bytes accepted", s, len(bad))
			}
		}
	}
}

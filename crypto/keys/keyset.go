package keys

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

const fileHeader = "gpuledger-private-key v1"

// ErrKeyFileMode means a private key file is readable by group or others.
var ErrKeyFileMode = errors.New("private key file must not be readable by group or others (chmod 600)")

// KeySet is a participant's private keys: one Ed25519 key, one ML-DSA-65 key,
// or both (hybrid). It prints only its key ids.
type KeySet struct {
	// Participant is the participant id the keys belong to, if known.
	Participant string
	signers     []*signer
}

// Generate makes a new key set with a key of each given scheme, from rand
// (crypto/rand when nil).
func Generate(participant string, rnd io.Reader, schemes ...Scheme) (*KeySet, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if len(schemes) == 0 {
		return nil, fmt.Errorf("generate key set: no scheme given")
	}
	seeds := make(map[Scheme][]byte)
	for _, s := range schemes {
		if !s.Valid() {
			return nil, fmt.Errorf("generate key set: %w: %v", ErrUnknownScheme, s)
		}
		seed := make([]byte, s.circl().SeedSize())
		if _, err := io.ReadFull(rnd, seed); err != nil {
			return nil, fmt.Errorf("generate key set: %w", err)
		}
		seeds[s] = seed
	}
	return fromSeeds(participant, seeds)
}

func fromSeeds(participant string, seeds map[Scheme][]byte) (*KeySet, error) {
	ks := &KeySet{Participant: participant}
	for _, s := range Schemes { // fixed order: Ed25519 first
		seed, ok := seeds[s]
		if !ok {
			continue
		}
		if len(seed) != s.circl().SeedSize() {
			return nil, fmt.Errorf("%w: %s seed is %d bytes, want %d", ErrMalformedKey, s.Name(), len(seed), s.circl().SeedSize())
		}
		pub, priv := s.circl().DeriveKey(seed)
		raw, err := pub.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrMalformedKey, s.Name(), err)
		}
		ks.signers = append(ks.signers, &signer{id: KeyID(s, raw), s: s, priv: priv, pub: raw, seed: bytes.Clone(seed)})
	}
	if len(ks.signers) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrMalformedKey)
	}
	return ks, nil
}

// Signers returns the set's signers, Ed25519 first.
func (ks *KeySet) Signers() []Signer {
	out := make([]Signer, len(ks.signers))
	for i, s := range ks.signers {
		out[i] = s
	}
	return out
}

// Hybrid reports whether the set holds both an Ed25519 and an ML-DSA-65 key.
func (ks *KeySet) Hybrid() bool { return len(ks.signers) == 2 }

// PublicKeys returns the set's public keys, Ed25519 first.
func (ks *KeySet) PublicKeys() []PublicKey {
	out := make([]PublicKey, len(ks.signers))
	for i, s := range ks.signers {
		out[i] = PublicKey{Scheme: s.s, Key: bytes.Clone(s.pub)}
	}
	return out
}

// String names the set by participant and key ids, never key material.
func (ks *KeySet) String() string {
	ids := make([]string, len(ks.signers))
	for i, s := range ks.signers {
		ids[i] = s.String()
	}
	return fmt.Sprintf("key set %q [%s]", ks.Participant, strings.Join(ids, ", "))
}

// MarshalText returns the private key file contents. Handle with care.
func (ks *KeySet) MarshalText() []byte {
	var b bytes.Buffer
	b.WriteString(fileHeader + "\n")
	if ks.Participant != "" {
		fmt.Fprintf(&b, "participant %s\n", ks.Participant)
	}
	for _, s := range ks.signers {
		fmt.Fprintf(&b, "%s %s\n", s.s.Name(), base64.StdEncoding.EncodeToString(s.seed))
	}
	return b.Bytes()
}

// ParseKeySet parses a private key file's contents.
func ParseKeySet(data []byte) (*KeySet, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	if !sc.Scan() || strings.TrimSpace(sc.Text()) != fileHeader {
		return nil, fmt.Errorf("%w: first line must be %q", ErrMalformedKey, fileHeader)
	}
	participant := ""
	seeds := make(map[Scheme][]byte)
	line := 1
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		word, value, ok := strings.Cut(text, " ")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: want \"<field> <value>\"", ErrMalformedKey, line)
		}
		if word == "participant" {
			participant = strings.TrimSpace(value)
			continue
		}
		s, err := ParseScheme(word)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if _, dup := seeds[s]; dup {
			return nil, fmt.Errorf("%w: line %d: second %s key", ErrMalformedKey, line, s.Name())
		}
		seed, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %s seed is not base64", ErrMalformedKey, line, s.Name())
		}
		seeds[s] = seed
	}
	return fromSeeds(participant, seeds)
}

// WriteFile writes the set's private key file with mode 0600, refusing to
// overwrite an existing file.
func (ks *KeySet) WriteFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if _, err := f.Write(ks.MarshalText()); err != nil {
		f.Close()
		return fmt.Errorf("write key file %q: %w", path, err)
	}
	return f.Close()
}

// ReadFile reads a private key file, refusing one that group or others can
// read.
func ReadFile(path string) (*KeySet, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if what := notPrivate(path); what != "" {
			return nil, fmt.Errorf("%s is %s, not a private key file: give the private key file (gpuledger keygen's FILE, without .pub)", path, what)
		}
		return nil, fmt.Errorf("read key file %q (mode %v): %w", path, st.Mode().Perm(), ErrKeyFileMode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	ks, err := ParseKeySet(data)
	if err != nil {
		if what := notPrivate(path); what != "" {
			return nil, fmt.Errorf("%s is %s, not a private key file: give the private key file (gpuledger keygen's FILE, without .pub)", path, what)
		}
		return nil, fmt.Errorf("read key file %q: %w", path, err)
	}
	return ks, nil
}

// notPrivate names what a file given as a private key file is instead, when
// it is plainly something else ("a public key file", "a genesis file"), else
// "". Such files are public, so reading them to tell is harmless.
func notPrivate(path string) string {
	data, err := os.ReadFile(path)
	if err != nil || len(data) > 1<<20 {
		return ""
	}
	text := strings.TrimSpace(string(data))
	switch {
	case strings.HasPrefix(text, "{") && strings.Contains(text, `"participants"`):
		return "a genesis file"
	case strings.HasPrefix(text, "{"):
		return "a JSON document"
	}
	lines := strings.Split(text, "\n")
	for _, l := range lines {
		if _, err := ParsePublicKey(strings.TrimSpace(l)); err != nil {
			return ""
		}
	}
	if len(lines) > 0 && text != "" {
		return "a public key file"
	}
	return ""
}

// Ed25519 returns the set's Ed25519 private key (a hybrid set's Ed25519
// half), for TLS client certificates, or false when it has none. Handle
// with care.
func (ks *KeySet) Ed25519() (ed25519.PrivateKey, bool) {
	for _, s := range ks.signers {
		if s.s == Ed25519 {
			return ed25519.NewKeyFromSeed(s.seed), true
		}
	}
	return nil, false
}

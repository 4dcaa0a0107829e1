// Package keys holds gpuledger's signature schemes, key ids, key files and a
// cache of parsed public keys.
//
// Two schemes are supported, both through cloudflare/circl's sign/schemes:
// Ed25519 and ML-DSA-65 (FIPS 204). A participant signs with a key set of one
// or both; a "hybrid" key set holds one of each and signs with both.
//
// # Key ids
//
// A key id is the lowercase hex encoding of the first 16 bytes of
//
//	SHA-256(scheme name || 0x00 || raw public key)
//
// where the scheme name is "Ed25519" or "ML-DSA-65".
//
// # Public keys
//
// A public key is written as one line of text, "<scheme name>:<base64 raw key>",
// for example "Ed25519:1a2b...=". A public key file holds one such line per key
// of a key set.
//
// # Private key files
//
// A private key file is text, created with mode 0600:
//
//	gpuledger-private-key v1
//	participant <participant id>
//	Ed25519 <base64 32-byte seed>
//	ML-DSA-65 <base64 32-byte seed>
//
// The participant line is optional; there is one seed line per key of the set
// (one or both schemes, each at most once). Keys are derived from the seeds.
// Key material is never logged: Signer and KeySet print only key ids.
package keys

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cloudflare/circl/sign"
	"github.com/cloudflare/circl/sign/ed25519"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Scheme is a signature scheme.
type Scheme int

const (
	// Ed25519 is RFC 8032 Ed25519.
	Ed25519 Scheme = iota + 1
	// MLDSA65 is FIPS 204 ML-DSA-65.
	MLDSA65
)

// Schemes lists the supported schemes.
var Schemes = []Scheme{Ed25519, MLDSA65}

// Name returns the scheme's name as used in key ids and key files.
func (s Scheme) Name() string {
	switch s {
	case Ed25519:
		return "Ed25519"
	case MLDSA65:
		return "ML-DSA-65"
	}
	return fmt.Sprintf("Scheme(%d)", int(s))
}

func (s Scheme) String() string { return s.Name() }

// Valid reports whether s is a supported scheme.
func (s Scheme) Valid() bool { return s == Ed25519 || s == MLDSA65 }

func (s Scheme) circl() sign.Scheme {
	switch s {
	case Ed25519:
		return ed25519.Scheme()
	case MLDSA65:
		return mldsa65.Scheme()
	}
	return nil
}

// PublicKeySize returns the size of a raw public key of the scheme.
func (s Scheme) PublicKeySize() int { return s.circl().PublicKeySize() }

// SignatureSize returns the size of a signature of the scheme.
func (s Scheme) SignatureSize() int { return s.circl().SignatureSize() }

// ParseScheme returns the scheme with the given name (case-insensitive).
func ParseScheme(name string) (Scheme, error) {
	for _, s := range Schemes {
		if strings.EqualFold(name, s.Name()) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("%w: %q (want Ed25519 or ML-DSA-65)", ErrUnknownScheme, name)
}

var (
	// ErrUnknownScheme means a scheme name is not Ed25519 or ML-DSA-65.
	ErrUnknownScheme = errors.New("unknown signature scheme")
	// ErrMalformedKey means key bytes or a key line could not be parsed; the
	// message says which part.
	ErrMalformedKey = errors.New("malformed key")
)

// KeyID returns the key id of a raw public key of the scheme.
func KeyID(s Scheme, publicKey []byte) string {
	h := sha256.New()
	h.Write([]byte(s.Name()))
	h.Write([]byte{0})
	h.Write(publicKey)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// A Verifier checks signatures of one public key. It is safe for concurrent use.
type Verifier interface {
	// KeyID returns the key's id.
	KeyID() string
	// Scheme returns the key's scheme.
	Scheme() Scheme
	// Verify reports whether sig is a valid signature of msg. It MUST NOT
	// panic on any input.
	Verify(msg, sig []byte) bool
}

// A Signer signs with one private key. It is safe for concurrent use.
type Signer interface {
	// KeyID returns the id of the matching public key.
	KeyID() string
	// Scheme returns the key's scheme.
	Scheme() Scheme
	// Sign returns a signature of msg.
	Sign(msg []byte) []byte
}

type verifier struct {
	id  string
	s   Scheme
	pub sign.PublicKey
	raw []byte // the key's bytes, for Cache.VerifierFor
}

func (v *verifier) KeyID() string  { return v.id }
func (v *verifier) Scheme() Scheme { return v.s }
func (v *verifier) Verify(msg, sig []byte) bool {
	if len(sig) != v.s.SignatureSize() {
		return false
	}
	ok := v.s.circl().Verify(v.pub, msg, sig, nil)
	if v.s == MLDSA65 {
		clearUpper()
	}
	return ok
}

// NewVerifier parses a raw public key of the scheme.
func NewVerifier(s Scheme, publicKey []byte) (Verifier, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("%w: %v", ErrUnknownScheme, s)
	}
	if len(publicKey) != s.PublicKeySize() {
		return nil, fmt.Errorf("%w: %s public key is %d bytes, want %d", ErrMalformedKey, s.Name(), len(publicKey), s.PublicKeySize())
	}
	pub, err := s.circl().UnmarshalBinaryPublicKey(publicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %s public key: %v", ErrMalformedKey, s.Name(), err)
	}
	return &verifier{id: KeyID(s, publicKey), s: s, pub: pub, raw: bytes.Clone(publicKey)}, nil
}

type signer struct {
	id   string
	s    Scheme
	priv sign.PrivateKey
	pub  []byte
	seed []byte
}

func (k *signer) KeyID() string  { return k.id }
func (k *signer) Scheme() Scheme { return k.s }
func (k *signer) Sign(msg []byte) []byte {
	sig := k.s.circl().Sign(k.priv, msg, nil)
	if k.s == MLDSA65 {
		clearUpper()
	}
	return sig
}
func (k *signer) String() string { return k.s.Name() + " key " + k.id }

// PublicKey is a scheme and raw public key.
type PublicKey struct {
	Scheme Scheme
	Key    []byte
}

// ID returns the key id.
func (p PublicKey) ID() string { return KeyID(p.Scheme, p.Key) }

// String formats the key as one line, "<scheme name>:<base64 raw key>".
func (p PublicKey) String() string {
	return p.Scheme.Name() + ":" + base64.StdEncoding.EncodeToString(p.Key)
}

// ParsePublicKey parses a line written by PublicKey.String.
func ParsePublicKey(line string) (PublicKey, error) {
	name, b64, ok := strings.Cut(strings.TrimSpace(line), ":")
	if !ok {
		return PublicKey{}, fmt.Errorf("%w: %q is not <scheme>:<base64 key>", ErrMalformedKey, line)
	}
	s, err := ParseScheme(name)
	if err != nil {
		return PublicKey{}, err
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: %s key is not base64: %v", ErrMalformedKey, s.Name(), err)
	}
	if _, err := NewVerifier(s, raw); err != nil {
		return PublicKey{}, err
	}
	return PublicKey{Scheme: s, Key: raw}, nil
}

// Cache holds parsed public keys by key id, so that a key (an ML-DSA-65 key
// costs about two verifications to unpack) is parsed once. It is safe for
// concurrent use. The zero value is ready to use.
type Cache struct {
	m sync.Map // key id -> Verifier
}

// Verifier returns the parsed key, parsing it on first use. The key id is
// computed from scheme and key, so a cached entry can never belong to other
// bytes.
func (c *Cache) Verifier(s Scheme, publicKey []byte) (Verifier, error) {
	id := KeyID(s, publicKey)
	if v, ok := c.m.Load(id); ok {
		return v.(Verifier), nil
	}
	v, err := NewVerifier(s, publicKey)
	if err != nil {
		return nil, err
	}
	c.m.Store(id, v)
	return v, nil
}

// VerifierFor is Verifier for a key whose id the caller already holds (a
// registry's, which checked that it is the key's KeyID): it looks the key up
// by that id and compares the bytes instead of hashing them for every
// signature (about a microsecond for an ML-DSA-65 key, a signature's worth of
// time on a verify --all's every entry). A cached key is returned only for
// the same scheme and bytes; an id that is not the key's costs the hash,
// never a wrong key.
func (c *Cache) VerifierFor(id string, s Scheme, publicKey []byte) (Verifier, error) {
	if v, ok := c.m.Load(id); ok {
		if cv, ok := v.(*verifier); ok && cv.s == s && bytes.Equal(cv.raw, publicKey) {
			return cv, nil
		}
	}
	return c.Verifier(s, publicKey)
}

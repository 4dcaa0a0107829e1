package keys

import (
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkSHA256After times one SHA-256 of 1,200 bytes (an envelope's
// size) right after a signature verification on the same goroutine: alone,
// after Ed25519, after ML-DSA-65 as the project calls it (upper YMM state
// cleared), and after circl's ML-DSA-65 verify as it returns (dirty upper
// state). On Intel cores the last costs an AVX-to-SSE transition penalty; the
// metric sha256-ns is the hash alone.
func BenchmarkSHA256After(b *testing.B) {
	msg := make([]byte, 1200)
	set, err := Generate("bench", nil, Ed25519, MLDSA65)
	if err != nil {
		b.Fatal(err)
	}
	pubs := set.PublicKeys()
	ed, _ := NewVerifier(Ed25519, pubs[0].Key)
	ml, _ := NewVerifier(MLDSA65, pubs[1].Key)
	edSig, mlSig := set.Signers()[0].Sign(msg), set.Signers()[1].Sign(msg)
	raw := ml.(*verifier)
	for _, tc := range []struct {
		name   string
		before func()
	}{
		{"alone", func() {}},
		{"after-Ed25519", func() { ed.Verify(msg, edSig) }},
		{"after-ML-DSA-65", func() { ml.Verify(msg, mlSig) }},
		{"after-ML-DSA-65-uncleared", func() { MLDSA65.circl().Verify(raw.pub, msg, mlSig, nil) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var hashing time.Duration
			for b.Loop() {
				tc.before()
				t0 := time.Now()
				sha256.Sum256(msg)
				hashing += time.Since(t0)
			}
			b.ReportMetric(float64(hashing.Nanoseconds())/float64(b.N), "sha256-ns")
		})
	}
}

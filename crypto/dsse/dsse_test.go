package dsse_test

import (
	"errors"
	"testing"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
)

// TestPAE uses the worked example of the DSSE protocol specification
// (https://github.com/secure-systems-lab/dsse/blob/master/protocol.md).
func TestPAE(t *testing.T) {
	tests := []struct {
		typ, body, want string
	}{
		{"http://example.com/HelloWorld", "hello world", "DSSEv1 29 http://example.com/HelloWorld 11 hello world"},
		{"", "", "DSSEv1 0  0 "},
		{"é", "a b\n", "DSSEv1 2 é 4 a b\n"}, // lengths count bytes
	}
	for _, tc := range tests {
		if got := string(dsse.PAE(tc.typ, []byte(tc.body))); got != tc.want {
			t.Errorf("PAE(%q, %q) = %q, want %q", tc.typ, tc.body, got, tc.want)
		}
	}
}

func TestSignVerify(t *testing.T) {
	for _, s := range keys.Schemes {
		t.Run(s.Name(), func(t *testing.T) {
			ks, err := keys.Generate("p", nil, s)
			if err != nil {
				t.Fatal(err)
			}
			signer := ks.Signers()[0]
			pub := ks.PublicKeys()[0]
			v, err := keys.NewVerifier(pub.Scheme, pub.Key)
			if err != nil {
				t.Fatal(err)
			}
			env := dsse.Sign("t", []byte("body"), signer)
			if err := dsse.VerifySignature(env, v); err != nil {
				t.Fatalf("VerifySignature = %v", err)
			}
			env.Payload = []byte("bodY")
			if err := dsse.VerifySignature(env, v); err == nil {
				t.Fatal("signature verified over a changed payload")
			}
			env = dsse.Sign("u", []byte("body"), signer)
			env.PayloadType = "t" // the type is authenticated too
			if err := dsse.VerifySignature(env, v); err == nil {
				t.Fatal("signature verified under a changed payload type")
			}
			env.Signatures = nil
			if err := dsse.VerifySignature(env, v); !errors.Is(err, dsse.ErrNoSignature) {
				t.Fatalf("VerifySignature(unsigned) = %v, want ErrNoSignature", err)
			}
		})
	}
}

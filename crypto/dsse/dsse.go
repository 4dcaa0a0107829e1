// Package dsse signs and verifies DSSE envelopes
// (https://github.com/secure-systems-lab/dsse, protocol v1) in gpuledger's
// protobuf form.
//
// Signatures are over the pre-authentication encoding
//
//	PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
//
// where LEN is the length in bytes as ASCII decimal with no leading zeros and
// SP is one space.
package dsse

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/gpuledger/gpuledger/crypto/keys"
	gpuledgerv1 "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// Payload types of gpuledger envelopes.
const (
	CustodyEventType   = "application/vnd.gpuledger.custody-event+proto"
	RegistryChangeType = "application/vnd.gpuledger.registry-change+proto"
)

// PAE returns DSSE's pre-authentication encoding of payloadType and payload.
func PAE(payloadType string, payload []byte) []byte {
	t := strconv.Itoa(len(payloadType))
	p := strconv.Itoa(len(payload))
	b := make([]byte, 0, 6+1+len(t)+1+len(payloadType)+1+len(p)+1+len(payload))
	b = append(b, "DSSEv1 "...)
	b = append(b, t...)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = append(b, p...)
	b = append(b, ' ')
	b = append(b, payload...)
	return b
}

// Sign returns an envelope of payload signed by each signer, in order.
func Sign(payloadType string, payload []byte, signers ...keys.Signer) *gpuledgerv1.Envelope {
	pae := PAE(payloadType, payload)
	env := &gpuledgerv1.Envelope{PayloadType: payloadType, Payload: payload}
	for _, s := range signers {
		env.Signatures = append(env.Signatures, &gpuledgerv1.Signature{Keyid: s.KeyID(), Sig: s.Sign(pae)})
	}
	return env
}

// SignMessage serializes msg deterministically and signs it as payloadType.
func SignMessage(payloadType string, msg proto.Message, signers ...keys.Signer) (*gpuledgerv1.Envelope, error) {
	payload, err := Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", payloadType, err)
	}
	return Sign(payloadType, payload, signers...), nil
}

// Marshal is the one serialization gpuledger signs and stores: deterministic
// protobuf.
func Marshal(msg proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(msg)
}

// ErrNoSignature means an envelope carries no signature by the given key.
var ErrNoSignature = errors.New("no signature by key")

// VerifySignature checks the envelope's signature by key v.
func VerifySignature(env *gpuledgerv1.Envelope, v keys.Verifier) error {
	pae := PAE(env.GetPayloadType(), env.GetPayload())
	for _, s := range env.GetSignatures() {
		if s.GetKeyid() == v.KeyID() {
			if v.Verify(pae, s.GetSig()) {
				return nil
			}
			return fmt.Errorf("signature by %s key %s does not verify", v.Scheme(), v.KeyID())
		}
	}
	return fmt.Errorf("%w %s", ErrNoSignature, v.KeyID())
}

package ledger_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	mfd    = pb.EventType_EVENT_TYPE_MANUFACTURED
	ship   = pb.EventType_EVENT_TYPE_SHIPPED
	recv   = pb.EventType_EVENT_TYPE_RECEIVED
	inst   = pb.EventType_EVENT_TYPE_INSTALLED
	att    = pb.EventType_EVENT_TYPE_ATTESTED
	decomm = pb.EventType_EVENT_TYPE_DECOMMISSIONED
	destr  = pb.EventType_EVENT_TYPE_DESTROYED
	lost   = pb.EventType_EVENT_TYPE_REPORTED_LOST
)

// envelopeWith signs ev's payload with the given signers, then lets mod
// change the envelope before it is serialised.
func envelopeWith(ev proto.Message, payloadType string, mod func(*pb.Envelope), signers ...keys.Signer) []byte {
	env, err := dsse.SignMessage(payloadType, ev, signers...)
	if err != nil {
		panic(err)
	}
	if mod != nil {
		mod(env)
	}
	b, _ := dsse.Marshal(env)
	return b
}

func signerOf(m *consortium.Member, s keys.Scheme) keys.Signer {
	for _, k := range m.Keys.Signers() {
		if k.Scheme() == s {
			return k
		}
	}
	panic("no signer")
}

// TestRejections covers every structural and authorisation rule: each
// rejected envelope gets a typed error with the right code and reason and
// leaves size, root and the serial's state unchanged.
func TestRejections(t *testing.T) {
	const sn = "GPU-0001"
	tests := []struct {
		name   string
		setup  func(f *fixture)
		submit func(f *fixture) []byte
		code   custody.Code
		reason string
	}{
		{
			name:   "manufactured twice",
			setup:  func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", mfd, sn) },
			code:   custody.Exists, reason: custody.ReasonSerialExists,
		},
		{
			name:   "manufactured by a distributor",
			submit: func(f *fixture) []byte { return f.sign("eu-dist", mfd, sn) },
			code:   custody.Forbidden, reason: custody.ReasonNotManufacturer,
		},
		{
			name:   "shipped by a non-custodian",
			setup:  func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte { return f.sign("eu-dist", ship, sn, to("us-dist")) },
			code:   custody.Forbidden, reason: custody.ReasonNotCustodian,
		},
		{
			name: "shipped while in transit",
			setup: func(f *fixture) {
				f.must(f.sign("acme-gpu", mfd, sn))
				f.must(f.sign("acme-gpu", ship, sn, to("eu-dist")))
			},
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn, to("us-dist")) },
			code:   custody.Forbidden, reason: custody.ReasonNotCustodian,
		},
		{
			name:   "shipped with no consignee",
			setup:  func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn) },
			code:   custody.Malformed, reason: custody.ReasonNoConsignee,
		},
		{
			name:   "installed by a non-custodian",
			setup:  func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			submit: func(f *fixture) []byte { return f.sign("rack-integrator", inst, sn) },
			code:   custody.Forbidden, reason: custody.ReasonNotCustodian,
		},
		{
			name:   "decommissioned by a non-custodian",
			setup:  func(f *fixture) { f.delivered(sn, "dc-frankfurt"); f.must(f.sign("dc-frankfurt", inst, sn)) },
			submit: func(f *fixture) []byte { return f.sign("eu-dist", decomm, sn) },
			code:   custody.Forbidden, reason: custody.ReasonNotCustodian,
		},
		{
			name:   "destroyed by a non-custodian",
			setup:  func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", destr, sn) },
			code:   custody.Forbidden, reason: custody.ReasonNotCustodian,
		},
		{
			name:   "received by a regulator, which cannot hold GPUs",
			setup:  func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte { return f.sign("export-regulator", recv, sn) },
			code:   custody.Forbidden, reason: custody.ReasonCannotHold,
		},
		{
			name:   "received by an auditor, which cannot hold GPUs",
			setup:  func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte { return f.sign("audit-office", recv, sn) },
			code:   custody.Forbidden, reason: custody.ReasonCannotHold,
		},
		{
			name:   "shipped to an auditor",
			setup:  func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn, to("audit-office")) },
			code:   custody.Forbidden, reason: custody.ReasonCannotHold,
		},
		{
			name: "a location in an unknown country",
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", mfd, sn, func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: "XX"} })
			},
			code: custody.Malformed, reason: custody.ReasonUnknownCountry,
		},
		{
			name: "a location in a reserved, non-ISO code",
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", mfd, sn, func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: "XK"} })
			},
			code: custody.Malformed, reason: custody.ReasonUnknownCountry,
		},
		{
			name:  "a destination in an unknown country",
			setup: func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", ship, sn, to("eu-dist"), func(e *pb.CustodyEvent) { e.DestinationCountry = "ZZ" })
			},
			code: custody.Malformed, reason: custody.ReasonUnknownCountry,
		},
		{
			name: "a site the actor has not registered",
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", mfd, sn, func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: "TW", SiteId: "taipei-fab"} })
			},
			code: custody.Malformed, reason: custody.ReasonUnknownSite,
		},
		{
			name:  "another participant's site",
			setup: func(f *fixture) { f.delivered(sn, "dc-virginia") },
			submit: func(f *fixture) []byte {
				return f.sign("dc-virginia", inst, sn, func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: "DE", SiteId: "fra-dc1"} })
			},
			code: custody.Malformed, reason: custody.ReasonUnknownSite,
		},
		{
			name:  "stale head",
			setup: func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			submit: func(f *fixture) []byte {
				stale := f.event("acme-gpu", ship, sn, to("eu-dist"))
				f.must(f.sign("acme-gpu", ship, sn, to("us-dist")))
				return f.member("acme-gpu").SignEvent(stale)
			},
			code: custody.StaleHead, reason: custody.ReasonStaleHead,
		},
		{
			name: "event for an unknown serial",
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", ship, sn, to("eu-dist"), func(e *pb.CustodyEvent) { e.PrevEventHash = make([]byte, 32) })
			},
			code: custody.NotFound, reason: custody.ReasonUnknownSerial,
		},
		{
			name: "time beyond the clock skew",
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", mfd, sn, func(e *pb.CustodyEvent) { e.OccurredAt = timestamppb.New(f.now.Add(10*time.Minute + time.Second)) })
			},
			code: custody.Malformed, reason: custody.ReasonFutureTime,
		},
		{
			name: "oversized envelope",
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", mfd, sn, func(e *pb.CustodyEvent) {
					e.Evidence = []*pb.Evidence{{Type: "application/octet-stream", Data: make([]byte, 70<<10)}}
				})
			},
			code: custody.TooLarge, reason: custody.ReasonTooLarge,
		},
		{
			name:   "garbage bytes",
			submit: func(f *fixture) []byte { return []byte("\xff\xff\xff not protobuf") },
			code:   custody.Malformed, reason: custody.ReasonEnvelopeMalformed,
		},
		{
			name: "unknown field in the envelope",
			submit: func(f *fixture) []byte {
				return protowire.AppendBytes(protowire.AppendTag(f.sign("acme-gpu", mfd, sn), 99, protowire.BytesType), []byte("x"))
			},
			code: custody.Malformed, reason: custody.ReasonNotCanonical,
		},
		{
			name: "unknown field inside the event",
			submit: func(f *fixture) []byte {
				ev := f.event("acme-gpu", mfd, sn)
				ev.Location.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 50, protowire.VarintType), 1))
				return f.member("acme-gpu").SignEvent(ev)
			},
			code: custody.Malformed, reason: custody.ReasonNotCanonical,
		},
		{
			name: "unknown payload type",
			submit: func(f *fixture) []byte {
				return envelopeWith(f.event("acme-gpu", mfd, sn), "application/json", nil, f.member("acme-gpu").Keys.Signers()...)
			},
			code: custody.Malformed, reason: custody.ReasonPayloadType,
		},
		{
			name: "unknown event type",
			submit: func(f *fixture) []byte {
				return f.sign("acme-gpu", mfd, sn, func(e *pb.CustodyEvent) { e.Type = 99 })
			},
			code: custody.Malformed, reason: custody.ReasonEventType,
		},
		{
			name:   "serial with forbidden characters",
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", mfd, "GPU 0001;DROP") },
			code:   custody.Malformed, reason: custody.ReasonSerialFormat,
		},
		{
			name: "signed by another participant's key",
			submit: func(f *fixture) []byte {
				return envelopeWith(f.event("acme-gpu", mfd, sn), dsse.CustodyEventType, nil, f.member("eu-dist").Keys.Signers()...)
			},
			code: custody.Unauthenticated, reason: custody.ReasonWrongSigner,
		},
		{
			name: "signed by an unregistered key",
			submit: func(f *fixture) []byte {
				ks, _ := keys.Generate("acme-gpu", nil, keys.Ed25519)
				return envelopeWith(f.event("acme-gpu", mfd, sn), dsse.CustodyEventType, nil, ks.Signers()...)
			},
			code: custody.Unauthenticated, reason: custody.ReasonUnknownKey,
		},
		{
			name: "wrong scheme: an ML-DSA-65 signature under an Ed25519 key id",
			submit: func(f *fixture) []byte {
				reg := f.member("export-regulator")
				ed, ml := signerOf(reg, keys.Ed25519), signerOf(reg, keys.MLDSA65)
				ch := &pb.RegistryChange{LedgerId: f.c.LedgerID, Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
					Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: "sg-dist"}}}
				return envelopeWith(ch, dsse.RegistryChangeType, func(e *pb.Envelope) {
					e.Signatures = []*pb.Signature{{Keyid: ed.KeyID(), Sig: e.Signatures[0].Sig}}
				}, ml)
			},
			code: custody.Unauthenticated, reason: custody.ReasonBadSignature,
		},
		{
			name: "truncated signature",
			submit: func(f *fixture) []byte {
				return envelopeWith(f.event("acme-gpu", mfd, sn), dsse.CustodyEventType, func(e *pb.Envelope) {
					e.Signatures[0].Sig = e.Signatures[0].Sig[:63]
				}, f.member("acme-gpu").Keys.Signers()...)
			},
			code: custody.Unauthenticated, reason: custody.ReasonBadSignature,
		},
		{
			name: "signature over another payload",
			submit: func(f *fixture) []byte {
				return envelopeWith(f.event("acme-gpu", mfd, sn), dsse.CustodyEventType, func(e *pb.Envelope) {
					other, _ := dsse.Marshal(f.event("acme-gpu", mfd, "GPU-OTHER"))
					e.Payload = other
				}, f.member("acme-gpu").Keys.Signers()...)
			},
			code: custody.Unauthenticated, reason: custody.ReasonBadSignature,
		},
		{
			name: "no signature",
			submit: func(f *fixture) []byte {
				return envelopeWith(f.event("acme-gpu", mfd, sn), dsse.CustodyEventType, nil)
			},
			code: custody.Unauthenticated, reason: custody.ReasonNoSignature,
		},
		{
			name:  "hybrid participant signs with its Ed25519 key only",
			setup: func(f *fixture) { f.delivered(sn, "dc-virginia") },
			submit: func(f *fixture) []byte {
				m := f.member("dc-virginia")
				return envelopeWith(f.event("dc-virginia", inst, sn), dsse.CustodyEventType, nil, signerOf(m, keys.Ed25519))
			},
			code: custody.Unauthenticated, reason: custody.ReasonHybridRequired,
		},
		{
			name:  "hybrid participant signs with its ML-DSA-65 key only",
			setup: func(f *fixture) { f.delivered(sn, "dc-virginia") },
			submit: func(f *fixture) []byte {
				m := f.member("dc-virginia")
				return envelopeWith(f.event("dc-virginia", inst, sn), dsse.CustodyEventType, nil, signerOf(m, keys.MLDSA65))
			},
			code: custody.Unauthenticated, reason: custody.ReasonHybridRequired,
		},
		{
			name: "key used after its revocation",
			setup: func(f *fixture) {
				f.must(f.sign("acme-gpu", mfd, sn)) // the key signs before revocation
				f.must(f.member("export-regulator").SignChange(&pb.RegistryChange{
					Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
					Change: &pb.RegistryChange_RevokeKey{RevokeKey: &pb.RevokeKey{
						ParticipantId: "acme-gpu", KeyId: f.member("acme-gpu").Keys.Signers()[0].KeyID()}},
				}))
			},
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn, to("eu-dist")) },
			code:   custody.Unauthenticated, reason: custody.ReasonKeyRevoked,
		},
		{
			name: "unknown participant",
			submit: func(f *fixture) []byte {
				ks, _ := keys.Generate("ghost-co", nil, keys.Ed25519)
				return envelopeWith(f.event("ghost-co", mfd, sn), dsse.CustodyEventType, nil, ks.Signers()...)
			},
			code: custody.Unauthenticated, reason: custody.ReasonUnknownParticipant,
		},
		{
			name: "suspended participant",
			setup: func(f *fixture) {
				f.must(f.member("export-regulator").SignChange(&pb.RegistryChange{
					Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
					Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: "acme-gpu"}},
				}))
			},
			submit: func(f *fixture) []byte { return f.sign("acme-gpu", mfd, sn) },
			code:   custody.Forbidden, reason: custody.ReasonSuspended,
		},
		{
			name: "registry change adds a participant in an unknown country",
			submit: func(f *fixture) []byte {
				return f.member("export-regulator").SignChange(&pb.RegistryChange{
					Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
					Change: &pb.RegistryChange_AddParticipant{AddParticipant: &pb.Participant{Id: "zz-front", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "ZZ",
						Keys: f.member("eu-dist").Participant.GetKeys()[:0]}},
				})
			},
			code: custody.Malformed, reason: custody.ReasonUnknownCountry,
		},
		{
			name: "registry change sets a policy naming an unknown country",
			submit: func(f *fixture) []byte {
				p := f.l.Registry().Policy().Proto()
				p.Version++
				p.Countries = append(p.Countries, &pb.CountryRule{Country: "XX", Class: pb.CountryClass_COUNTRY_CLASS_RESTRICTED})
				return f.member("export-regulator").SignChange(&pb.RegistryChange{
					Actor: "export-regulator", OccurredAt: timestamppb.New(f.now), Change: &pb.RegistryChange_SetPolicy{SetPolicy: p}})
			},
			code: custody.Malformed, reason: custody.ReasonUnknownCountry,
		},
		{
			name: "registry change by a non-regulator",
			submit: func(f *fixture) []byte {
				return f.member("acme-gpu").SignChange(&pb.RegistryChange{
					Actor: "acme-gpu", OccurredAt: timestamppb.New(f.now),
					Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: "eu-dist"}},
				})
			},
			code: custody.Forbidden, reason: custody.ReasonNotRegulator,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			env := tc.submit(f)
			before := f.snap(sn)
			r := f.apply(env)[0]
			var rej *custody.Error
			if !errors.As(r.Err, &rej) {
				t.Fatalf("Apply = entry %v, err %v; want rejection %s", r.Entry, r.Err, tc.reason)
			}
			if rej.Code != tc.code || rej.Reason != tc.reason {
				t.Fatalf("Apply = %v (%v %s); want %v %s", rej, rej.Code, rej.Reason, tc.code, tc.reason)
			}
			if rej.Msg == "" {
				t.Errorf("rejection has no message")
			}
			if rej.Code == custody.StaleHead {
				if want := headOf(t, f.l, sn); string(rej.Head) != string(want) {
					t.Errorf("stale head error carries head %x, want %x", rej.Head, want)
				}
			}
			if after := f.snap(sn); !before.equal(after) {
				t.Errorf("rejection changed the store: size %d -> %d, serial %v -> %v", before.size, after.size, before.serial, after.serial)
			}
		})
	}
}

// TestClockSkewBoundary: an event dated exactly the skew ahead is accepted.
func TestClockSkewBoundary(t *testing.T) {
	f := newFixture(t)
	r := f.apply(f.sign("acme-gpu", mfd, "GPU-SKEW", func(e *pb.CustodyEvent) { e.OccurredAt = timestamppb.New(f.now.Add(10 * time.Minute)) }))[0]
	if r.Err != nil {
		t.Fatalf("event dated exactly the clock skew ahead: %v", r.Err)
	}
}

// TestFlags covers every accept-and-flag rule: the envelope is stored, with
// exactly the expected flags, and clean steps carry none.
func TestFlags(t *testing.T) {
	const sn = "GPU-0002"
	kinds := func(ks ...pb.FindingKind) []pb.FindingKind { return ks }
	K := struct{ unreg, restricted, licence, mismatch, brk, loc, terminal, lost pb.FindingKind }{
		pb.FindingKind_FINDING_KIND_UNREGISTERED_CONSIGNEE, pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION,
		pb.FindingKind_FINDING_KIND_LICENSE_MISSING, pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH,
		pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.FindingKind_FINDING_KIND_LOCATION_MISMATCH,
		pb.FindingKind_FINDING_KIND_ACTIVITY_AFTER_TERMINAL, pb.FindingKind_FINDING_KIND_REPORTED_LOST,
	}
	installed := func(f *fixture) { f.delivered(sn, "dc-frankfurt"); f.must(f.sign("dc-frankfurt", inst, sn)) }
	tests := []struct {
		name   string
		setup  func(f *fixture)
		submit func(f *fixture) []byte
		want   []pb.FindingKind
		state  pb.CustodyState
	}{
		{"manufactured: clean", nil, func(f *fixture) []byte { return f.sign("acme-gpu", mfd, sn) }, nil, pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"shipped to a registered consignee: clean", func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn, to("eu-dist")) }, nil, pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"shipped to an unregistered consignee", func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn, to("front-company")) }, kinds(K.unreg), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"shipped to a consignee in a restricted country", func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn, to("cn-trader")) }, kinds(K.restricted), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"shipped with a restricted destination", func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			func(f *fixture) []byte {
				return f.sign("acme-gpu", ship, sn, to("sg-dist"), func(e *pb.CustodyEvent) { e.DestinationCountry = "RU" })
			}, kinds(K.restricted), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"shipped into a licensed country without a licence", func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			func(f *fixture) []byte { return f.sign("acme-gpu", ship, sn, to("sa-dc")) }, kinds(K.licence), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"shipped into a licensed country with a licence: clean", func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			func(f *fixture) []byte {
				return f.sign("acme-gpu", ship, sn, to("sa-dc"), func(e *pb.CustodyEvent) { e.ExportLicense = "D123456" })
			}, nil, pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"received by the consignee: clean", func(f *fixture) {
			f.must(f.sign("acme-gpu", mfd, sn))
			f.must(f.sign("acme-gpu", ship, sn, to("eu-dist")))
		},
			func(f *fixture) []byte { return f.sign("eu-dist", recv, sn) }, nil, pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"received by someone other than the consignee", func(f *fixture) {
			f.must(f.sign("acme-gpu", mfd, sn))
			f.must(f.sign("acme-gpu", ship, sn, to("eu-dist")))
		},
			func(f *fixture) []byte { return f.sign("sg-dist", recv, sn) }, kinds(K.mismatch), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"received with no open shipment", func(f *fixture) { f.must(f.sign("acme-gpu", mfd, sn)) },
			func(f *fixture) []byte { return f.sign("us-dist", recv, sn) }, kinds(K.mismatch), pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"installed: clean", func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			func(f *fixture) []byte { return f.sign("dc-frankfurt", inst, sn) }, nil, pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"installed at a site in a restricted country", func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			func(f *fixture) []byte {
				return f.sign("dc-frankfurt", inst, sn, func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: "IR"} })
			}, kinds(K.restricted), pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"attested by the custodian at its site: clean", installed,
			func(f *fixture) []byte { return f.sign("dc-frankfurt", att, sn) }, nil, pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"attested by a non-custodian", installed,
			func(f *fixture) []byte { return f.sign("dc-virginia", att, sn) }, kinds(K.brk), pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"attested from another place", installed,
			func(f *fixture) []byte {
				return f.sign("dc-frankfurt", att, sn, func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: "AE"} })
			}, kinds(K.loc), pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"attested while not installed", func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			func(f *fixture) []byte { return f.sign("dc-frankfurt", att, sn) }, kinds(K.brk), pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"decommissioned: clean", installed,
			func(f *fixture) []byte { return f.sign("dc-frankfurt", decomm, sn) }, nil, pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"destroyed: clean", installed,
			func(f *fixture) []byte { return f.sign("dc-frankfurt", destr, sn) }, nil, pb.CustodyState_CUSTODY_STATE_DESTROYED},
		{"reported lost by the custodian", installed,
			func(f *fixture) []byte { return f.sign("dc-frankfurt", lost, sn) }, kinds(K.lost), pb.CustodyState_CUSTODY_STATE_LOST},
		{"reported lost in transit by the shipper", func(f *fixture) {
			f.must(f.sign("acme-gpu", mfd, sn))
			f.must(f.sign("acme-gpu", ship, sn, to("eu-dist")))
		},
			func(f *fixture) []byte { return f.sign("acme-gpu", lost, sn) }, kinds(K.lost), pb.CustodyState_CUSTODY_STATE_LOST},
		{"reported lost by a stranger", installed,
			func(f *fixture) []byte { return f.sign("us-dist", lost, sn) }, kinds(K.brk, K.lost), pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"received after a loss by someone else", func(f *fixture) { installed(f); f.must(f.sign("dc-frankfurt", lost, sn)) },
			func(f *fixture) []byte { return f.sign("eu-dist", recv, sn) }, kinds(K.mismatch), pb.CustodyState_CUSTODY_STATE_LOST},
		{"received after a loss by the custodian that lost it: clean", func(f *fixture) { installed(f); f.must(f.sign("dc-frankfurt", lost, sn)) },
			func(f *fixture) []byte { return f.sign("dc-frankfurt", recv, sn) }, nil, pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"received by the custodian with no shipment open", func(f *fixture) { f.delivered(sn, "eu-dist") },
			func(f *fixture) []byte { return f.sign("eu-dist", recv, sn) }, kinds(K.mismatch), pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"installed by a claimant", func(f *fixture) {
			f.must(f.sign("acme-gpu", mfd, sn))
			f.must(f.sign("acme-gpu", ship, sn, to("dc-frankfurt")))
			f.must(f.sign("dc-virginia", recv, sn))
		}, func(f *fixture) []byte { return f.sign("dc-virginia", inst, sn) }, kinds(K.brk), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"destroyed by a claimant", func(f *fixture) {
			f.must(f.sign("acme-gpu", mfd, sn))
			f.must(f.sign("acme-gpu", ship, sn, to("dc-frankfurt")))
			f.must(f.sign("dc-virginia", recv, sn))
		}, func(f *fixture) []byte { return f.sign("dc-virginia", destr, sn) }, kinds(K.brk), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"site whose country contradicts the event's", func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			func(f *fixture) []byte {
				return f.sign("dc-frankfurt", inst, sn, func(e *pb.CustodyEvent) { e.Location.Country = "FR" })
			}, kinds(K.loc), pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"site whose coordinates contradict the event's", func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			func(f *fixture) []byte {
				return f.sign("dc-frankfurt", inst, sn, func(e *pb.CustodyEvent) {
					e.Location.LatitudeE6, e.Location.LongitudeE6 = proto.Int32(48_137_000), proto.Int32(11_575_000) // Munich, 300 km away
				})
			}, kinds(K.loc), pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"a datacentre ships on a GPU it never installed", func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			func(f *fixture) []byte { return f.sign("dc-frankfurt", ship, sn, to("eu-dist")) },
			kinds(pb.FindingKind_FINDING_KIND_DATACENTRE_RESALE), pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"a datacentre ships on a GPU it installed and took out: clean", func(f *fixture) {
			f.delivered(sn, "dc-frankfurt")
			f.must(f.sign("dc-frankfurt", inst, sn))
			f.must(f.sign("dc-frankfurt", decomm, sn))
		}, func(f *fixture) []byte { return f.sign("dc-frankfurt", ship, sn, to("eu-dist")) }, nil, pb.CustodyState_CUSTODY_STATE_IN_TRANSIT},
		{"site with coordinates at the site: clean", func(f *fixture) { f.delivered(sn, "dc-frankfurt") },
			func(f *fixture) []byte {
				return f.sign("dc-frankfurt", inst, sn, func(e *pb.CustodyEvent) {
					e.Location.LatitudeE6, e.Location.LongitudeE6 = proto.Int32(50_110_000), proto.Int32(8_690_000)
				})
			}, nil, pb.CustodyState_CUSTODY_STATE_INSTALLED},
		{"attested after destruction", func(f *fixture) { installed(f); f.must(f.sign("dc-frankfurt", destr, sn)) },
			func(f *fixture) []byte { return f.sign("dc-frankfurt", att, sn) }, kinds(K.terminal), pb.CustodyState_CUSTODY_STATE_DESTROYED},
		{"received on another continent an hour after shipping", func(f *fixture) {
			f.must(f.sign("acme-gpu", mfd, sn))
			f.must(f.sign("acme-gpu", ship, sn, to("eu-dist")))
		},
			func(f *fixture) []byte {
				return f.sign("eu-dist", recv, sn, func(e *pb.CustodyEvent) { e.OccurredAt = timestamppb.New(f.now.Add(-23 * time.Hour)) })
			}, kinds(pb.FindingKind_FINDING_KIND_IMPOSSIBLE_TRAVEL), pb.CustodyState_CUSTODY_STATE_IN_CUSTODY},
		{"shipped after destruction, by anyone", func(f *fixture) { installed(f); f.must(f.sign("dc-frankfurt", destr, sn)) },
			func(f *fixture) []byte { return f.sign("sg-dist", ship, sn, to("cn-trader")) }, kinds(K.terminal, K.brk), pb.CustodyState_CUSTODY_STATE_DESTROYED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			r := f.apply(tc.submit(f))[0]
			if r.Err != nil {
				t.Fatalf("Apply rejected it: %v; want accepted with flags %v", r.Err, tc.want)
			}
			got := func(fl []*pb.Flag) []pb.FindingKind {
				var ks []pb.FindingKind
				for _, x := range fl {
					ks = append(ks, x.GetKind())
					if x.GetDetail() == "" || x.GetSeverity() == pb.Severity_SEVERITY_UNSPECIFIED {
						t.Errorf("flag %v lacks a detail or severity", x)
					}
				}
				return ks
			}
			if k := got(r.Entry.GetFlags()); !slices.Equal(k, tc.want) {
				t.Errorf("receipt flags = %v, want %v", k, tc.want)
			}
			stored, err := f.l.Entry(context.Background(), r.Entry.GetIndex())
			if err != nil {
				t.Fatal(err)
			}
			if k := got(stored.GetFlags()); !slices.Equal(k, tc.want) {
				t.Errorf("stored flags = %v, want %v", k, tc.want)
			}
			if st, _ := f.l.Serial(context.Background(), sn); st.GetState() != tc.state {
				t.Errorf("state = %v, want %v", st.GetState(), tc.state)
			}
			if st, _ := f.l.Serial(context.Background(), sn); string(st.GetHeadHash()) != string(r.Entry.GetEntryHash()) {
				t.Errorf("serial head = %x, want the new entry %x", st.GetHeadHash(), r.Entry.GetEntryHash())
			}
		})
	}
}

// Package policy holds the export policy that decides which events are
// flagged: country classes, denied parties, windows and thresholds. Policy is
// data (a protojson gpuledger.v1.Policy document); an embedded default applies
// until a REGULATOR replaces it with a signed registry entry.
package policy

import (
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/gpuledger/gpuledger/ledger/geo"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

//go:embed default.json
var defaultJSON []byte

// Default returns the embedded default policy. See docs/policy.md for the
// sources of its country classes.
func Default() *pb.Policy {
	p, err := Parse(defaultJSON)
	if err != nil {
		panic("embedded default policy: " + err.Error())
	}
	return p
}

// Parse reads and validates a protojson policy document.
func Parse(data []byte) (*pb.Policy, error) {
	p := new(pb.Policy)
	if err := protojson.Unmarshal(data, p); err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if _, err := New(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Policy is a validated policy with fast look-ups. It is immutable and safe
// for concurrent use.
type Policy struct {
	p       *pb.Policy
	classes map[string]pb.CountryClass
	denied  map[string]bool
}

// New validates p and indexes it. p must not be modified afterwards.
func New(p *pb.Policy) (*Policy, error) {
	if p.GetVersion() == 0 {
		return nil, fmt.Errorf("policy: version must be at least 1")
	}
	pol := &Policy{p: p, classes: make(map[string]pb.CountryClass), denied: make(map[string]bool)}
	for _, r := range p.GetCountries() {
		c := r.GetCountry()
		if _, ok := geo.Country(c); !ok {
			return nil, fmt.Errorf("policy: countries: %q: %w; give one such as DE, US or SG", c, ErrUnknownCountry)
		}
		if _, dup := pol.classes[c]; dup {
			return nil, fmt.Errorf("policy: country %s listed twice", c)
		}
		if _, ok := pb.CountryClass_name[int32(r.GetClass())]; !ok {
			return nil, fmt.Errorf("policy: country %s: unknown class %d", c, r.GetClass())
		}
		pol.classes[c] = r.GetClass()
	}
	for _, d := range p.GetDeniedParties() {
		pol.denied[d] = true
	}
	for _, d := range []struct {
		name     string
		v        interface{ AsDuration() time.Duration }
		set, opt bool
	}{
		{"handoff_window", p.GetHandoffWindow(), p.HandoffWindow != nil, false},
		{"silence_installed", p.GetSilenceInstalled(), p.SilenceInstalled != nil, false},
		{"silence_in_custody", p.GetSilenceInCustody(), p.SilenceInCustody != nil, false},
		{"clock_skew", p.GetClockSkew(), p.ClockSkew != nil, false},
		{"hub_dwell", p.GetHubDwell(), p.HubDwell != nil, true},
		{"resale_window", p.GetResaleWindow(), p.ResaleWindow != nil, true},
		{"serial_byte_window", p.GetSerialByteWindow(), p.SerialByteWindow != nil, true},
	} {
		if (d.set || !d.opt) && (!d.set || d.v.AsDuration() <= 0) {
			return nil, fmt.Errorf("policy: %s must be a positive duration", d.name)
		}
	}
	if p.GetMaxSpeedKmh() == 0 {
		return nil, fmt.Errorf("policy: max_speed_kmh must be positive")
	}
	if p.GetMaxEvidenceBytes() > 60<<10 {
		return nil, fmt.Errorf("policy: max_evidence_bytes %d is more than an envelope may hold (64 KiB with the rest of the event); at most 61440", p.GetMaxEvidenceBytes())
	}
	return pol, nil
}

// ErrUnknownCountry is returned by New for a country code that ISO 3166-1
// does not assign.
var ErrUnknownCountry = errors.New("not an ISO 3166-1 alpha-2 country code")

// Defaults of the fields a policy may leave unset.
const (
	DefaultHubDwell          = 14 * 24 * time.Hour
	DefaultMaxCustodyChanges = 3
	DefaultResaleWindow      = 90 * 24 * time.Hour
	DefaultMaxEvidenceBytes  = 16 << 10
	DefaultSerialBytes       = 1 << 20
	DefaultSerialByteWindow  = 30 * 24 * time.Hour
	DefaultSerialBurstBytes  = 16 << 20
)

// SerialBurstBytes is the most a participant's budget on a serial holds.
func (p *Policy) SerialBurstBytes() uint64 {
	if p.p.GetSerialBurstBytes() == 0 {
		return DefaultSerialBurstBytes
	}
	return p.p.GetSerialBurstBytes()
}

// MaxEvidenceBytes is the most bytes of evidence one event may carry.
func (p *Policy) MaxEvidenceBytes() int {
	if p.p.GetMaxEvidenceBytes() == 0 {
		return DefaultMaxEvidenceBytes
	}
	return int(p.p.GetMaxEvidenceBytes())
}

// SerialBytesPerWindow is how fast a participant's budget on a serial
// refills: bytes per SerialByteWindow.
func (p *Policy) SerialBytesPerWindow() uint64 {
	if p.p.GetSerialBytesPerWindow() == 0 {
		return DefaultSerialBytes
	}
	return p.p.GetSerialBytesPerWindow()
}

// SerialByteWindow is the window SerialBytesPerWindow refills in.
func (p *Policy) SerialByteWindow() time.Duration {
	if p.p.SerialByteWindow == nil {
		return DefaultSerialByteWindow
	}
	return p.p.GetSerialByteWindow().AsDuration()
}

// HubDwell is how soon a GPU received in a WATCH country may be shipped on to
// another country before it is TRANSSHIPMENT_HUB.
func (p *Policy) HubDwell() time.Duration {
	if p.p.HubDwell == nil {
		return DefaultHubDwell
	}
	return p.p.GetHubDwell().AsDuration()
}

// MaxCustodyChanges is how many changes of custodian ResaleWindow allows.
func (p *Policy) MaxCustodyChanges() uint32 {
	if p.p.GetMaxCustodyChanges() == 0 {
		return DefaultMaxCustodyChanges
	}
	return p.p.GetMaxCustodyChanges()
}

// ResaleWindow is the window RAPID_RESALE counts changes of custodian in.
func (p *Policy) ResaleWindow() time.Duration {
	if p.p.ResaleWindow == nil {
		return DefaultResaleWindow
	}
	return p.p.GetResaleWindow().AsDuration()
}

// Class returns how a country is treated.
func (p *Policy) Class(country string) pb.CountryClass { return p.classes[country] }

// Denied reports whether a participant is on the denied-party list.
func (p *Policy) Denied(participant string) bool { return p.denied[participant] }

// Version returns the policy's version.
func (p *Policy) Version() uint64 { return p.p.GetVersion() }

// ClockSkew returns how far ahead of the ledger's clock an event may be dated.
func (p *Policy) ClockSkew() time.Duration { return p.p.GetClockSkew().AsDuration() }

// Proto returns a copy of the policy document.
func (p *Policy) Proto() *pb.Policy { return proto.Clone(p.p).(*pb.Policy) }

// MaxSpeedKmh returns the speed above which travel is impossible.
func (p *Policy) MaxSpeedKmh() uint32 { return p.p.GetMaxSpeedKmh() }

// HandoffWindow is how long a shipment may stay unreceived.
func (p *Policy) HandoffWindow() time.Duration { return p.p.GetHandoffWindow().AsDuration() }

// SilenceInstalled is how long an installed GPU may stay silent.
func (p *Policy) SilenceInstalled() time.Duration { return p.p.GetSilenceInstalled().AsDuration() }

// SilenceInCustody is how long a GPU not installed may stay silent.
func (p *Policy) SilenceInCustody() time.Duration { return p.p.GetSilenceInCustody().AsDuration() }

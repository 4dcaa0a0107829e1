// Package consortium builds a consortium from a list of members: a key set per
// participant, a node key and the genesis file that registers them. The
// development node (gpuledgerd dev) and the tests use it.
package consortium

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Spec describes one member to create.
type Spec struct {
	ID      string
	Name    string
	Role    pb.Role
	Country string
	Sites   []*pb.Site
	// Schemes are the key schemes of the member's key set (Ed25519 when empty).
	Schemes []keys.Scheme
	// Hybrid makes the member require both signatures (needs both schemes).
	Hybrid bool
}

// Member is a participant with its private keys.
type Member struct {
	Participant *pb.Participant
	Keys        *keys.KeySet
	// LedgerID is the consortium's ledger id, which SignEvent and
	// SignChange put in a payload that names none.
	LedgerID string
}

// Consortium is a set of members, a node key and their genesis.
type Consortium struct {
	Members []*Member
	// Genesis is the genesis file (protojson).
	Genesis []byte
	// LedgerID is the ledger id: lowercase hex of the SHA-256 of Genesis,
	// what every signed payload names.
	LedgerID string
	// NodeName is the node's name; NodeKey its signed-note private key
	// ("PRIVATE+KEY+..."), NodeVerifierKey the public one.
	NodeName, NodeKey, NodeVerifierKey string
	// NodeSigner signs checkpoints with NodeKey.
	NodeSigner note.Signer
	// Nodes are all the nodes' keys; Nodes[0] is the one above.
	Nodes []NodeKey
}

// NodeKey is a node's name, operator and signed-note keys.
type NodeKey struct {
	Name, Operator   string
	Key, VerifierKey string
	Signer           note.Signer
}

// Options tune Build.
type Options struct {
	// Rand is the randomness for keys; crypto/rand when nil.
	Rand io.Reader
	// LedgerName names the ledger (default "gpuledger-dev").
	LedgerName string
	// CreatedAt is the genesis time (default 2026-01-01).
	CreatedAt time.Time
	// NodeName is the node's name (default "node-1"), operated by NodeOperator
	// (default: the first member).
	NodeName, NodeOperator string
	// Policy is the genesis policy (default: none, so the embedded default).
	Policy *pb.Policy
	// MoreNodes adds nodes beyond the first, each with a name and operator.
	MoreNodes []NodeSpec
	// RegistryQuorum is the genesis's registry_quorum (0: one regulator).
	RegistryQuorum uint32
}

// NodeSpec names a node and the participant that operates it.
type NodeSpec struct{ Name, Operator string }

// Build creates the members' keys, a node key and the genesis.
func Build(specs []Spec, o Options) (*Consortium, error) {
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.LedgerName == "" {
		o.LedgerName = "gpuledger-dev"
	}
	if o.CreatedAt.IsZero() {
		o.CreatedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if o.NodeName == "" {
		o.NodeName = "node-1"
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("consortium: no members")
	}
	if o.NodeOperator == "" {
		o.NodeOperator = specs[0].ID
	}
	c := &Consortium{NodeName: o.NodeName}
	g := &pb.Genesis{LedgerName: o.LedgerName, CreatedAt: timestamppb.New(o.CreatedAt), Policy: o.Policy, RegistryQuorum: o.RegistryQuorum}
	for _, s := range specs {
		schemes := s.Schemes
		if len(schemes) == 0 {
			schemes = []keys.Scheme{keys.Ed25519}
		}
		ks, err := keys.Generate(s.ID, o.Rand, schemes...)
		if err != nil {
			return nil, fmt.Errorf("consortium: %s: %w", s.ID, err)
		}
		p := &pb.Participant{Id: s.ID, DisplayName: s.Name, Role: s.Role, Country: s.Country, Sites: s.Sites, RequireHybrid: s.Hybrid}
		for _, pk := range ks.PublicKeys() {
			p.Keys = append(p.Keys, PublicKeyProto(pk))
		}
		g.Participants = append(g.Participants, p)
		c.Members = append(c.Members, &Member{Participant: p, Keys: ks})
	}
	for _, ns := range append([]NodeSpec{{o.NodeName, o.NodeOperator}}, o.MoreNodes...) {
		skey, vkey, err := note.GenerateKey(o.Rand, ns.Name)
		if err != nil {
			return nil, fmt.Errorf("consortium: node key: %w", err)
		}
		signer, err := note.NewSigner(skey)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, NodeKey{Name: ns.Name, Operator: ns.Operator, Key: skey, VerifierKey: vkey, Signer: signer})
		g.Nodes = append(g.Nodes, &pb.Node{Name: ns.Name, ParticipantId: ns.Operator, VerifierKey: vkey})
	}
	c.NodeKey, c.NodeVerifierKey, c.NodeSigner = c.Nodes[0].Key, c.Nodes[0].VerifierKey, c.Nodes[0].Signer
	var err error
	c.Genesis, err = MarshalGenesis(g)
	if err != nil {
		return nil, err
	}
	c.LedgerID = LedgerID(c.Genesis)
	for _, m := range c.Members {
		m.LedgerID = c.LedgerID
	}
	return c, nil
}

// LedgerID returns the id of the ledger whose genesis file is genesis.
func LedgerID(genesis []byte) string {
	h := sha256.Sum256(genesis)
	return hex.EncodeToString(h[:])
}

// MarshalGenesis writes a genesis document as indented protojson.
func MarshalGenesis(g *pb.Genesis) ([]byte, error) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("marshal genesis: %w", err)
	}
	return append(b, '\n'), nil
}

// PublicKeyProto returns the registry form of a public key.
func PublicKeyProto(pk keys.PublicKey) *pb.PublicKey {
	s := pb.KeyScheme_KEY_SCHEME_ED25519
	if pk.Scheme == keys.MLDSA65 {
		s = pb.KeyScheme_KEY_SCHEME_ML_DSA_65
	}
	return &pb.PublicKey{KeyId: pk.ID(), Scheme: s, PublicKey: pk.Key}
}

// Member returns the member with the given id, or nil.
func (c *Consortium) Member(id string) *Member {
	for _, m := range c.Members {
		if m.Participant.GetId() == id {
			return m
		}
	}
	return nil
}

// SignEvent signs a custody event with all of the member's keys and returns
// the envelope's stored bytes.
func (m *Member) SignEvent(ev *pb.CustodyEvent) []byte {
	if ev.GetLedgerId() == "" {
		ev = proto.CloneOf(ev)
		ev.LedgerId = m.LedgerID
	}
	return SignEnvelope(dsse.CustodyEventType, ev, m.Keys.Signers()...)
}

// SignChange signs a registry change with all of the member's keys.
func (m *Member) SignChange(ch *pb.RegistryChange) []byte {
	if ch.GetLedgerId() == "" {
		ch = proto.CloneOf(ch)
		ch.LedgerId = m.LedgerID
	}
	return SignEnvelope(dsse.RegistryChangeType, ch, m.Keys.Signers()...)
}

// SignEnvelope signs msg as payloadType with the given signers and returns the
// envelope's deterministic wire form.
func SignEnvelope(payloadType string, msg proto.Message, signers ...keys.Signer) []byte {
	env, err := dsse.SignMessage(payloadType, msg, signers...)
	if err != nil {
		panic(err) // only for messages that cannot be marshalled
	}
	b, err := dsse.Marshal(env)
	if err != nil {
		panic(err)
	}
	return b
}

// Dev returns the development consortium's members: a manufacturer, two
// distributors, an integrator, two datacentres in different countries, an
// auditor and a regulator.
func Dev() []Spec {
	lat := func(v float64) *int32 { x := int32(math.Round(v * 1e6)); return &x }
	return []Spec{
		{ID: "acme-gpu", Name: "Acme GPU Manufacturing", Role: pb.Role_ROLE_MANUFACTURER, Country: "TW",
			Sites: []*pb.Site{{Id: "hsinchu-fab", Country: "TW", LatitudeE6: lat(24.80), LongitudeE6: lat(120.97)}}},
		{ID: "eu-dist", Name: "Euro Components Distribution", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "NL",
			Sites: []*pb.Site{{Id: "rotterdam-wh", Country: "NL", LatitudeE6: lat(51.92), LongitudeE6: lat(4.48)}}},
		{ID: "us-dist", Name: "Pacific Systems Distribution", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "US",
			Sites: []*pb.Site{{Id: "san-jose-wh", Country: "US", LatitudeE6: lat(37.34), LongitudeE6: lat(-121.89)}}},
		{ID: "rack-integrator", Name: "Rack & Stack Integration", Role: pb.Role_ROLE_INTEGRATOR, Country: "DE",
			Sites: []*pb.Site{{Id: "frankfurt-lab", Country: "DE", LatitudeE6: lat(50.11), LongitudeE6: lat(8.68)}}},
		{ID: "dc-frankfurt", Name: "Frankfurt Compute Centre", Role: pb.Role_ROLE_DATACENTRE, Country: "DE",
			Sites: []*pb.Site{{Id: "fra-dc1", Country: "DE", LatitudeE6: lat(50.10), LongitudeE6: lat(8.63)}}},
		{ID: "dc-virginia", Name: "Virginia Cloud Campus", Role: pb.Role_ROLE_DATACENTRE, Country: "US",
			Sites:   []*pb.Site{{Id: "iad-dc2", Country: "US", LatitudeE6: lat(39.04), LongitudeE6: lat(-77.49)}},
			Schemes: []keys.Scheme{keys.Ed25519, keys.MLDSA65}, Hybrid: true},
		{ID: "audit-office", Name: "Independent Audit Office", Role: pb.Role_ROLE_AUDITOR, Country: "GB"},
		{ID: "export-regulator", Name: "Export Control Authority", Role: pb.Role_ROLE_REGULATOR, Country: "US",
			Schemes: []keys.Scheme{keys.Ed25519, keys.MLDSA65}},
	}
}

// DevWith returns the development members with every key set made of the
// given schemes (hybrid, and required to sign with both, when both).
func DevWith(schemes ...keys.Scheme) []Spec {
	specs := Dev()
	for i := range specs {
		specs[i].Schemes, specs[i].Hybrid = schemes, len(schemes) == 2
	}
	return specs
}

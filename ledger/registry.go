package ledger

import (
	"errors"
	"fmt"
	"slices"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/policy"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"
)

// Registry is the consortium as it stands at some log index: participants
// with their keys (past and present), checkpoint-signing nodes and the policy.
// A Registry returned by the ledger is immutable; its methods return values
// that callers MUST NOT modify.
type Registry struct {
	participants map[string]*pb.Participant
	keys         map[string]keyRef // key id -> owner and key
	nodes        []*pb.Node
	policy       *policy.Policy
	quorum       int // regulators that must sign a registry change
}

type keyRef struct {
	owner string
	key   *pb.PublicKey
}

// ErrNoRegulator is returned for a genesis with no REGULATOR participant: it
// could found a ledger whose registry nobody can change. Everything else in
// the document was checked when it is returned.
var ErrNoRegulator = errors.New("no REGULATOR participant; one is needed to sign registry changes")

// newRegistry builds the registry of a genesis document.
func newRegistry(g *pb.Genesis) (*Registry, error) {
	r := &Registry{participants: make(map[string]*pb.Participant), keys: make(map[string]keyRef)}
	pol := g.GetPolicy()
	if pol == nil {
		pol = policy.Default()
	}
	p, err := policy.New(pol)
	if err != nil {
		return nil, fmt.Errorf("genesis: %w", err)
	}
	r.policy = p
	regulators := 0
	for _, p := range g.GetParticipants() {
		p = proto.Clone(p).(*pb.Participant)
		if err := r.addParticipant(p, 0); err != nil {
			return nil, fmt.Errorf("genesis: %w", err)
		}
		if p.GetRole() == pb.Role_ROLE_REGULATOR {
			regulators++
		}
	}
	for _, n := range g.GetNodes() {
		if err := r.addNode(proto.Clone(n).(*pb.Node)); err != nil {
			return nil, fmt.Errorf("genesis: %w", err)
		}
	}
	if regulators == 0 { // last, so that a draft without one is otherwise checked
		return nil, fmt.Errorf("genesis: %w", ErrNoRegulator)
	}
	r.quorum = max(int(g.GetRegistryQuorum()), 1)
	if r.quorum > regulators {
		return nil, fmt.Errorf("genesis: registry_quorum %d, but only %d REGULATOR participants to sign: nobody could change the registry", r.quorum, regulators)
	}
	if able := r.ableRegulators(0, "", ""); able < r.quorum {
		return nil, fmt.Errorf("genesis: registry_quorum %d, but only %d regulators have the keys to sign", r.quorum, able)
	}
	return r, nil
}

// Quorum returns how many distinct regulators must sign a registry change.
func (r *Registry) Quorum() int { return r.quorum }

// ableRegulators counts the regulators that could sign a registry change
// taking effect at index from: not suspended, with an active Ed25519 key
// (and an ML-DSA-65 one when they require hybrid signatures), as if
// participant suspend were suspended and key revoke revoked at from.
func (r *Registry) ableRegulators(from uint64, suspend, revoke string) int {
	n := 0
	for id, p := range r.participants {
		if p.GetRole() != pb.Role_ROLE_REGULATOR || id == suspend || (p.GetSuspendedAtIndex() != 0 && p.GetSuspendedAtIndex() <= from) {
			continue
		}
		var ed, ml bool
		for _, k := range p.GetKeys() {
			if k.GetKeyId() == revoke || !KeyActive(k, from) {
				continue
			}
			ed = ed || k.GetScheme() == pb.KeyScheme_KEY_SCHEME_ED25519
			ml = ml || k.GetScheme() == pb.KeyScheme_KEY_SCHEME_ML_DSA_65
		}
		if (ed || ml) && (!p.GetRequireHybrid() || (ed && ml)) {
			n++
		}
	}
	return n
}

// keepQuorum refuses a change that would leave fewer regulators able to
// sign than the quorum: a registry nobody can change again.
func (r *Registry) keepQuorum(from uint64, suspend, revoke, what string) *custody.Error {
	if able := r.ableRegulators(from, suspend, revoke); able < r.quorum {
		return custody.Reject(custody.Precondition, custody.ReasonLastRegulator,
			"%s would leave %d regulators able to sign registry changes, fewer than the %d each change needs: the registry could never change again", what, able, r.quorum)
	}
	return nil
}

// Participant returns the participant with the given id, or nil.
func (r *Registry) Participant(id string) *pb.Participant { return r.participants[id] }

// Participants returns every participant in id order.
func (r *Registry) Participants() []*pb.Participant {
	ids := make([]string, 0, len(r.participants))
	for id := range r.participants {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]*pb.Participant, len(ids))
	for i, id := range ids {
		out[i] = r.participants[id]
	}
	return out
}

// Key returns a key by id and the id of the participant that holds it.
func (r *Registry) Key(id string) (*pb.PublicKey, string) {
	k, ok := r.keys[id]
	if !ok {
		return nil, ""
	}
	return k.key, k.owner
}

// Nodes returns the checkpoint-signing nodes.
func (r *Registry) Nodes() []*pb.Node { return r.nodes }

// Policy returns the policy in force.
func (r *Registry) Policy() *policy.Policy { return r.policy }

// KeyActive reports whether a key may sign the entry at index.
func KeyActive(k *pb.PublicKey, index uint64) bool {
	return k.GetActiveFromIndex() <= index && (k.GetRevokedAtIndex() == 0 || index < k.GetRevokedAtIndex())
}

// clone returns a copy whose maps may be changed without touching r.
func (r *Registry) clone() *Registry {
	c := &Registry{
		participants: make(map[string]*pb.Participant, len(r.participants)),
		keys:         make(map[string]keyRef, len(r.keys)),
		nodes:        slices.Clone(r.nodes),
		policy:       r.policy,
		quorum:       r.quorum,
	}
	for id, p := range r.participants {
		c.participants[id] = p
	}
	for id, k := range r.keys {
		c.keys[id] = k
	}
	return c
}

// mutable returns a private copy of participant id, installed in r, with its
// keys re-indexed, so that earlier registries sharing the old value stay as
// they were.
func (r *Registry) mutable(id string) *pb.Participant {
	p := proto.Clone(r.participants[id]).(*pb.Participant)
	r.participants[id] = p
	for _, k := range p.GetKeys() {
		r.keys[k.GetKeyId()] = keyRef{owner: id, key: k}
	}
	return p
}

func (r *Registry) addParticipant(p *pb.Participant, activeFrom uint64) *custody.Error {
	if !custody.ValidParticipantID(p.GetId()) {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant id %s: want [a-z0-9][a-z0-9-]{1,62}", custody.Quote(p.GetId()))
	}
	if _, dup := r.participants[p.GetId()]; dup {
		return custody.Reject(custody.Exists, custody.ReasonParticipantExists, "participant %q already exists", p.GetId())
	}
	if _, ok := pb.Role_name[int32(p.GetRole())]; !ok || p.GetRole() == pb.Role_ROLE_UNSPECIFIED {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant %q: role must be one of MANUFACTURER, DISTRIBUTOR, INTEGRATOR, DATACENTRE, AUDITOR, REGULATOR", p.GetId())
	}
	if err := custody.CheckCountry("participant "+p.GetId()+" country", p.GetCountry()); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, s := range p.GetSites() {
		if err := custody.ValidateSite(s); err != nil {
			return err
		}
		if seen[s.GetId()] {
			return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant %q: site %s listed twice", p.GetId(), custody.Quote(s.GetId()))
		}
		seen[s.GetId()] = true
	}
	if len(p.GetKeys()) == 0 && p.GetRole() != pb.Role_ROLE_AUDITOR {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant %q has no keys", p.GetId())
	}
	p.SuspendedAtIndex = 0
	ids := map[string]bool{}
	for _, k := range p.GetKeys() {
		if err := r.checkNewKey(p.GetId(), k); err != nil {
			return err
		}
		if ids[k.GetKeyId()] {
			return custody.Reject(custody.Malformed, custody.ReasonKeyExists, "participant %q lists key %s twice", p.GetId(), k.GetKeyId())
		}
		ids[k.GetKeyId()] = true
		k.ActiveFromIndex, k.RevokedAtIndex = activeFrom, 0
	}
	if p.GetRequireHybrid() && !(hasScheme(p, pb.KeyScheme_KEY_SCHEME_ED25519) && hasScheme(p, pb.KeyScheme_KEY_SCHEME_ML_DSA_65)) {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant %q requires hybrid signatures but lacks an Ed25519 or an ML-DSA-65 key", p.GetId())
	}
	r.participants[p.GetId()] = p
	for _, k := range p.GetKeys() {
		r.keys[k.GetKeyId()] = keyRef{owner: p.GetId(), key: k}
	}
	return nil
}

func hasScheme(p *pb.Participant, s pb.KeyScheme) bool {
	for _, k := range p.GetKeys() {
		if k.GetScheme() == s && k.GetRevokedAtIndex() == 0 {
			return true
		}
	}
	return false
}

// checkNewKey validates a key to be added and fills in its id when empty.
func (r *Registry) checkNewKey(owner string, k *pb.PublicKey) *custody.Error {
	s, ok := schemeOf(k.GetScheme())
	if !ok {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant %q: key scheme must be ED25519 or ML_DSA_65", owner)
	}
	if _, err := keys.NewVerifier(s, k.GetPublicKey()); err != nil {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant %q: %v", owner, err)
	}
	id := keys.KeyID(s, k.GetPublicKey())
	if k.GetKeyId() != "" && k.GetKeyId() != id {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "participant %q: key_id %s does not match its key (want %s)", owner, custody.Quote(k.GetKeyId()), id)
	}
	k.KeyId = id
	if _, dup := r.keys[id]; dup {
		return custody.Reject(custody.Exists, custody.ReasonKeyExists, "key %s is already registered", id)
	}
	return nil
}

func schemeOf(s pb.KeyScheme) (keys.Scheme, bool) {
	switch s {
	case pb.KeyScheme_KEY_SCHEME_ED25519:
		return keys.Ed25519, true
	case pb.KeyScheme_KEY_SCHEME_ML_DSA_65:
		return keys.MLDSA65, true
	}
	return 0, false
}

// ProtoScheme returns the protobuf enum of a key scheme.
func ProtoScheme(s keys.Scheme) pb.KeyScheme {
	if s == keys.MLDSA65 {
		return pb.KeyScheme_KEY_SCHEME_ML_DSA_65
	}
	return pb.KeyScheme_KEY_SCHEME_ED25519
}

func (r *Registry) addNode(n *pb.Node) *custody.Error {
	v, err := note.NewVerifier(n.GetVerifierKey())
	if err != nil {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "node %s: verifier key: %v", custody.Quote(n.GetName()), err)
	}
	if v.Name() != n.GetName() {
		return custody.Reject(custody.Malformed, custody.ReasonInvalidField, "node %s: verifier key is named %s", custody.Quote(n.GetName()), custody.Quote(v.Name()))
	}
	if r.participants[n.GetParticipantId()] == nil {
		return custody.Reject(custody.NotFound, custody.ReasonUnknownParticipant, "node %s: participant %s is not registered", custody.Quote(n.GetName()), custody.Quote(n.GetParticipantId()))
	}
	for _, o := range r.nodes {
		if o.GetName() == n.GetName() {
			return custody.Reject(custody.Exists, custody.ReasonNodeExists, "node %s already exists", custody.Quote(n.GetName()))
		}
	}
	r.nodes = append(r.nodes, n)
	return nil
}

// applyChange applies a registry change recorded at index; it takes effect
// from index+1. It assumes the signer was authorised and is a REGULATOR.
func (r *Registry) applyChange(ch *pb.RegistryChange, index uint64) *custody.Error {
	from := index + 1
	switch c := ch.GetChange().(type) {
	case *pb.RegistryChange_AddParticipant:
		return r.addParticipant(proto.Clone(c.AddParticipant).(*pb.Participant), from)
	case *pb.RegistryChange_AddKey:
		id := c.AddKey.GetParticipantId()
		if r.participants[id] == nil {
			return custody.Reject(custody.NotFound, custody.ReasonUnknownParticipant, "add key: participant %s is not registered", custody.Quote(id))
		}
		k := proto.Clone(c.AddKey.GetKey()).(*pb.PublicKey)
		if err := r.checkNewKey(id, k); err != nil {
			return err
		}
		k.ActiveFromIndex, k.RevokedAtIndex = from, 0
		p := r.mutable(id)
		p.Keys = append(p.Keys, k)
		r.keys[k.GetKeyId()] = keyRef{owner: id, key: k}
	case *pb.RegistryChange_RevokeKey:
		id, kid := c.RevokeKey.GetParticipantId(), c.RevokeKey.GetKeyId()
		k, owner := r.Key(kid)
		if k == nil || owner != id {
			return custody.Reject(custody.NotFound, custody.ReasonUnknownKey, "revoke key: %s holds no key %s", custody.Quote(id), custody.Quote(kid))
		}
		if k.GetRevokedAtIndex() != 0 {
			return custody.Reject(custody.Exists, custody.ReasonKeyRevoked, "revoke key: key %s was already revoked at index %d", kid, k.GetRevokedAtIndex())
		}
		if rej := r.keepQuorum(from, "", kid, "revoking key "+kid+" of "+id); rej != nil {
			return rej
		}
		for _, pk := range r.mutable(id).GetKeys() {
			if pk.GetKeyId() == kid {
				pk.RevokedAtIndex = from
			}
		}
	case *pb.RegistryChange_SuspendParticipant:
		id := c.SuspendParticipant.GetParticipantId()
		if r.participants[id] == nil {
			return custody.Reject(custody.NotFound, custody.ReasonUnknownParticipant, "suspend: participant %s is not registered", custody.Quote(id))
		}
		if r.participants[id].GetSuspendedAtIndex() != 0 {
			return custody.Reject(custody.Exists, custody.ReasonSuspended, "suspend: participant %s is already suspended", custody.Quote(id))
		}
		if rej := r.keepQuorum(from, id, "", "suspending "+id); rej != nil {
			return rej
		}
		r.mutable(id).SuspendedAtIndex = from
	case *pb.RegistryChange_UnsuspendParticipant:
		id := c.UnsuspendParticipant.GetParticipantId()
		if r.participants[id] == nil {
			return custody.Reject(custody.NotFound, custody.ReasonUnknownParticipant, "unsuspend: participant %s is not registered", custody.Quote(id))
		}
		if r.participants[id].GetSuspendedAtIndex() == 0 {
			return custody.Reject(custody.Precondition, custody.ReasonNotSuspended, "unsuspend: participant %s is not suspended", id)
		}
		r.mutable(id).SuspendedAtIndex = 0
	case *pb.RegistryChange_AddNode:
		return r.addNode(proto.Clone(c.AddNode).(*pb.Node))
	case *pb.RegistryChange_SetPolicy:
		if c.SetPolicy.GetVersion() <= r.policy.Version() {
			return custody.Reject(custody.Malformed, custody.ReasonPolicyVersion, "policy version %d is not greater than the current %d", c.SetPolicy.GetVersion(), r.policy.Version())
		}
		p, err := policy.New(proto.Clone(c.SetPolicy).(*pb.Policy))
		if err != nil {
			reason := custody.ReasonInvalidField
			if errors.Is(err, policy.ErrUnknownCountry) {
				reason = custody.ReasonUnknownCountry
			}
			return custody.Reject(custody.Malformed, reason, "%v", err)
		}
		r.policy = p
	default:
		return custody.Reject(custody.Malformed, custody.ReasonRegistryChangeEmpty, "registry change sets no change")
	}
	return nil
}

// NewRegistry returns the registry a genesis founds. Verifiers rebuild the
// registry from it and the log's registry-change entries.
func NewRegistry(g *pb.Genesis) (*Registry, error) { return newRegistry(g) }

// WithChange returns the registry after a change recorded at index (in force
// from index+1); r is unchanged.
func (r *Registry) WithChange(ch *pb.RegistryChange, index uint64) (*Registry, error) {
	c := r.clone()
	if rej := c.applyChange(ch, index); rej != nil {
		return nil, rej
	}
	return c, nil
}

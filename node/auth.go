package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Scope is who may read what (--read-scope).
type Scope int

const (
	// ScopeOpen: anyone who reaches the node reads everything and may
	// submit (signed envelopes still decide what is accepted).
	ScopeOpen Scope = iota
	// ScopeAuthenticated: every call needs a registered identity (a
	// participant's key, or a node's); then everything may be read.
	ScopeAuthenticated
	// ScopeScoped: auditors, regulators and nodes read everything; any
	// other participant reads the serials it has been party to, from the
	// entry at which it became party (ledger.PartyOf), and their findings,
	// proofs and passports; the registry, checkpoints and consistency
	// proofs are every participant's.
	ScopeScoped
)

var scopeNames = []string{"open", "authenticated", "scoped"}

func (s Scope) String() string { return scopeNames[s] }

// ParseScope parses a --read-scope value.
func ParseScope(v string) (Scope, error) {
	for i, n := range scopeNames {
		if v == n {
			return Scope(i), nil
		}
	}
	return 0, fmt.Errorf("read scope %s: want open, authenticated or scoped", custody.Quote(v))
}

// Reasons of authentication and read scope errors.
const (
	ReasonAuthRequired  = "AUTHENTICATION_REQUIRED"
	ReasonUnknownKey    = "UNKNOWN_CLIENT_KEY"
	ReasonKeyRevoked    = "KEY_REVOKED"
	ReasonSuspended     = "PARTICIPANT_SUSPENDED"
	ReasonBadToken      = "BAD_TOKEN"
	ReasonTokenReplayed = "TOKEN_REPLAYED"
	ReasonNotAParty     = "NOT_A_PARTY"
	ReasonAuditorScope  = "AUDITOR_SCOPE_REQUIRED"
	ReasonNodeOnly      = "NODE_ONLY"
	ReasonTLSRequired   = "TLS_REQUIRED"
)

// caller is who made a call, as the registry applied now says.
type caller struct {
	participant string  // "" for a node
	node        string  // the node's name, for a node
	keyID       string  // the key that authenticated (participants)
	role        pb.Role // the participant's role
	via         string  // "certificate" or "token"
	reg         *ledger.Registry
}

// all reports whether the caller reads everything under ScopeScoped.
func (c *caller) all() bool {
	return c.node != "" || c.role == pb.Role_ROLE_AUDITOR || c.role == pb.Role_ROLE_REGULATOR
}

func (c *caller) String() string {
	if c.node != "" {
		return "node " + c.node
	}
	return "participant " + c.participant
}

type callerKey struct{}

// callerOf returns the caller the guard authenticated, or nil (open scope,
// or a call that showed no identity).
func callerOf(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}

// authenticate finds the identity a call shows: the key of its TLS client
// certificate, else its gpuledger-auth token; nil when it shows none. A key
// that is unknown, revoked or whose participant is suspended is an error.
func (n *Node) authenticate(ctx context.Context, method string) (*caller, error) {
	reg := n.ledger.Registry()
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			id, pub, ok := auth.KeyIDOfCertificate(ti.State.PeerCertificates[0])
			if !ok {
				return nil, withInfo(codes.Unauthenticated, ReasonUnknownKey,
					"the client certificate's key is not Ed25519, so it is no registered key: present a certificate over your participant's Ed25519 key (gpuledger client-cert)", nil)
			}
			if name := n.nodeByKey(reg, pub); name != "" {
				return &caller{node: name, via: "certificate", reg: reg}, nil
			}
			return n.participantKey(reg, id, "certificate")
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vs := md.Get(auth.Header)
	if len(vs) == 0 {
		return nil, nil
	}
	if len(vs) > 1 {
		return nil, withInfo(codes.Unauthenticated, ReasonBadToken, "send one "+auth.Header+" header, not several", nil)
	}
	t, err := auth.ParseToken(vs[0])
	if err != nil {
		return nil, withInfo(codes.Unauthenticated, ReasonBadToken, "header "+auth.Header+": "+err.Error(), nil)
	}
	now := time.Now()
	if d := now.Sub(t.At); d > auth.TokenLifetime || d < -auth.TokenLifetime {
		return nil, withInfo(codes.Unauthenticated, ReasonBadToken, fmt.Sprintf("the token is dated %s, more than %v from this node's clock (%s): sign a fresh token per call, and check the clock",
			t.At.UTC().Format(time.RFC3339), auth.TokenLifetime, now.UTC().Format(time.RFC3339)), nil)
	}
	c, err := n.participantKey(reg, t.KeyID, "token")
	if err != nil {
		return nil, err
	}
	k, _ := reg.Key(t.KeyID)
	v, err := n.verifiers.Verifier(keys.Scheme(k.GetScheme()), k.GetPublicKey())
	if err != nil || !v.Verify(auth.TokenMessage(n.ledger.ID(), method, t.KeyID, t.At, t.Nonce), t.Sig) {
		return nil, withInfo(codes.Unauthenticated, ReasonBadToken, "the token's signature does not verify: it must be by key "+t.KeyID+" over this ledger's id, the method "+method+", the time and the nonce", nil)
	}
	if !n.nonces.fresh(t.Nonce, now) {
		return nil, withInfo(codes.Unauthenticated, ReasonTokenReplayed, "this token was used before: sign a new one (a new nonce) for every call", nil)
	}
	return c, nil
}

// participantKey checks that key id is a registered key, not revoked, of a
// participant not suspended.
func (n *Node) participantKey(reg *ledger.Registry, id, via string) (*caller, error) {
	k, owner := reg.Key(id)
	if k == nil {
		return nil, withInfo(codes.Unauthenticated, ReasonUnknownKey, fmt.Sprintf("key %s is not a key of this ledger's registry: authenticate with your participant's registered key", id), map[string]string{"key_id": id})
	}
	if k.GetRevokedAtIndex() != 0 {
		return nil, withInfo(codes.Unauthenticated, ReasonKeyRevoked, fmt.Sprintf("key %s of %s was revoked at entry %d", id, owner, k.GetRevokedAtIndex()), map[string]string{"key_id": id})
	}
	p := reg.Participant(owner)
	if p.GetSuspendedAtIndex() != 0 {
		return nil, withInfo(codes.PermissionDenied, ReasonSuspended, fmt.Sprintf("participant %s is suspended since entry %d", owner, p.GetSuspendedAtIndex()), map[string]string{"participant": owner})
	}
	return &caller{participant: owner, keyID: id, role: p.GetRole(), via: via, reg: reg}, nil
}

// recheck re-authenticates a long-lived call (a stream) once the registry
// has changed since the caller was checked: a key revoked or a participant
// suspended mid-stream ends the stream.
func (n *Node) recheck(c *caller) (*caller, error) {
	reg := n.ledger.Registry()
	if c == nil || c.reg == reg {
		return c, nil
	}
	if c.node != "" {
		for _, nd := range reg.Nodes() {
			if nd.GetName() == c.node {
				return &caller{node: c.node, via: c.via, reg: reg}, nil
			}
		}
		return nil, withInfo(codes.Unauthenticated, ReasonUnknownKey, "node "+c.node+" is no longer a node of the registry", nil)
	}
	return n.participantKey(reg, c.keyID, c.via)
}

// authorize decides who may call what, before the method runs: outside the
// open scope every call needs an identity; the cluster's own calls need a
// node; under ScopeScoped, StreamEntries needs a caller that reads all.
// Per-serial checks are the methods' (visible, entryVisible).
func (n *Node) authorize(ctx context.Context, method string) (context.Context, error) {
	if n.cfg.ReadScope == ScopeOpen {
		return ctx, nil
	}
	c, err := n.authenticate(ctx, method)
	if err != nil {
		return ctx, err
	}
	if c == nil {
		return ctx, withInfo(codes.Unauthenticated, ReasonAuthRequired, fmt.Sprintf(
			"node %s serves registered participants only (read scope %s): present a client certificate over your participant key (gpuledger --identity FILE; grpcurl -cert/-key from gpuledger client-cert) or a %s token",
			n.cfg.Name, n.cfg.ReadScope, auth.Header), nil)
	}
	switch method {
	case "/gpuledger.v1.ClusterService/CosignCheckpoint", "/gpuledger.v1.ClusterService/JoinCluster":
		if c.node == "" {
			return ctx, withInfo(codes.PermissionDenied, ReasonNodeOnly, method+" is for the cluster's nodes; "+c.String()+" is not one", nil)
		}
	case "/gpuledger.v1.LedgerService/StreamEntries":
		if n.cfg.ReadScope == ScopeScoped && !c.all() {
			return ctx, withInfo(codes.PermissionDenied, ReasonAuditorScope, fmt.Sprintf(
				"streaming every entry needs an auditor, a regulator or a node (read scope scoped); %s reads its own serials (gpuledger serials, history)", c), nil)
		}
	}
	return context.WithValue(ctx, callerKey{}, c), nil
}

// visible returns from which entry of a serial's history (its position, 0
// for MANUFACTURED) the caller may read it: 0 for every caller outside
// ScopeScoped and for those who read all; else the position at which the
// participant became party, or PERMISSION_DENIED NOT_A_PARTY (also for a
// serial that does not exist, so that a refusal says nothing of it).
func (n *Node) visible(ctx context.Context, serial string) (ledger.Party, error) {
	c := callerOf(ctx)
	if n.cfg.ReadScope != ScopeScoped || c == nil || c.all() {
		return ledger.Party{}, nil
	}
	p, err := n.ledger.PartyOf(ctx, c.participant, serial)
	if err != nil {
		return p, withInfo(codes.PermissionDenied, ReasonNotAParty, fmt.Sprintf(
			"%s has not been party to serial %s: under read scope scoped a participant reads the serials it has held, shipped or been shipped, from then on",
			c, custody.Quote(serial)), map[string]string{"serial": serial})
	}
	return p, nil
}

// entryVisible says whether the caller may read the entry at index: a
// registry change is every participant's; a custody event, its serial's
// parties' from when they became party, and its own signer's.
func (n *Node) entryVisible(ctx context.Context, e *pb.Entry) error {
	c := callerOf(ctx)
	if n.cfg.ReadScope != ScopeScoped || c == nil || c.all() || e.GetEvent() == nil {
		return nil
	}
	ev := e.GetEvent()
	if ev.GetActor() == c.participant {
		return nil
	}
	p, err := n.visible(ctx, ev.GetSerial())
	if err != nil {
		return err
	}
	if e.GetIndex() < p.Index {
		return withInfo(codes.PermissionDenied, ReasonNotAParty, fmt.Sprintf(
			"entry %d of serial %s is from before %s became party to it (entry %d)", e.GetIndex(), custody.Quote(ev.GetSerial()), c, p.Index),
			map[string]string{"serial": ev.GetSerial()})
	}
	return nil
}

// findingVisible says whether the caller may see a finding: one of a
// serial it may read that rests on entries it may read alone (none from
// before it became party), or, for those who read all, any.
func (n *Node) findingVisible(ctx context.Context, f *pb.Finding) bool {
	c := callerOf(ctx)
	if n.cfg.ReadScope != ScopeScoped || c == nil || c.all() {
		return true
	}
	if f.GetSerial() == "" {
		return false
	}
	p, err := n.ledger.PartyOf(ctx, c.participant, f.GetSerial())
	if err != nil {
		return false
	}
	for _, i := range f.GetEvidenceIndexes() {
		if i < p.Index {
			return false
		}
	}
	return true
}

// redact removes from a serial's state what a participant reading it from
// entry p.Index on may not see: custody changes, rival claims and a hub
// arrival from before then, other participants' byte budgets, and findings
// that rest on earlier entries. The GPU's own facts (model, ECCN,
// manufacturer, first entry) stay: they are printed on it.
func (n *Node) redact(ctx context.Context, st *pb.SerialState, p ledger.Party) {
	c := callerOf(ctx)
	if n.cfg.ReadScope != ScopeScoped || c == nil || c.all() {
		return
	}
	st.CustodyChanges = slices.DeleteFunc(st.CustodyChanges, func(x *pb.CustodyChange) bool { return x.GetIndex() < p.Index })
	st.Claims = slices.DeleteFunc(st.Claims, func(x *pb.Claim) bool { return x.GetIndex() < p.Index })
	if st.GetHubArrival().GetIndex() < p.Index {
		st.HubArrival = nil
	}
	st.Budgets = slices.DeleteFunc(st.Budgets, func(b *pb.ByteBudget) bool { return b.GetParticipant() != c.participant })
	st.OpenFindings = slices.DeleteFunc(st.OpenFindings, func(f *pb.Finding) bool { return !n.findingVisible(ctx, f) })
}

// nonces remembers the nonces of recent tokens, so that each is used once.
// Tokens older than auth.TokenLifetime are refused by their date, so a nonce
// is kept no longer than twice that. At most maxNonces are kept: past it,
// the oldest half is dropped, which lets a token be replayed only by the
// registered participant that signed it in the first place.
type nonces struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

const maxNonces = 1 << 20

func (s *nonces) fresh(nonce string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = make(map[string]time.Time)
	}
	if _, ok := s.seen[nonce]; ok {
		return false
	}
	if len(s.seen) >= maxNonces {
		for k, t := range s.seen {
			if now.Sub(t) > 2*auth.TokenLifetime || len(s.seen) >= maxNonces/2 {
				delete(s.seen, k)
			}
		}
	}
	s.seen[nonce] = now
	return true
}

// authStream re-authenticates a stream's caller before each message it
// sends once the registry has changed (recheck).
type authStream struct {
	grpc.ServerStream
	n   *Node
	ctx context.Context
	c   *caller
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) SendMsg(m any) error {
	if s.c != nil {
		c, err := s.n.recheck(s.c)
		if err != nil {
			return err
		}
		s.c = c
	}
	return s.ServerStream.SendMsg(m)
}

// plaintextRefusal answers every call made in plaintext to a node that
// serves TLS only with FAILED_PRECONDITION TLS_REQUIRED.
func plaintextRefusal(name string) *grpc.Server {
	msg := "node " + name + " serves gRPC over TLS only: connect with TLS (gpuledger --cacert FILE, or the system's CAs; grpcurl -cacert FILE, without -plaintext)"
	return grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		return withInfo(codes.FailedPrecondition, ReasonTLSRequired, msg, nil)
	}), grpc.MaxConcurrentStreams(4), grpc.MaxRecvMsgSize(1<<16), grpc.ConnectionTimeout(time.Second))
}

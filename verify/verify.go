// Package verify checks what a gpuledger node says without trusting it. From
// a trusted genesis file it verifies checkpoints (signed by a node key listed
// in the genesis, for this ledger's origin), rebuilds the registry from the
// log's own registry-change entries, and verifies a serial's whole chain:
// every entry's signatures under the registry of its index, the links from
// MANUFACTURED to the head, and every entry's inclusion in the checkpoint.
package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Failure is a verification failure at an entry (Index) or of the
// checkpoint (Index < 0).
type Failure struct {
	Index int64
	What  string
}

func (f *Failure) Error() string {
	if f.Index < 0 {
		return f.What
	}
	return fmt.Sprintf("entry %d: %s", f.Index, f.What)
}

func fail(index int64, format string, args ...any) *Failure {
	return &Failure{Index: index, What: fmt.Sprintf(format, args...)}
}

// Verifier verifies against one trusted genesis. It is safe for concurrent
// use once configured.
type Verifier struct {
	// MinSigners is how many nodes of distinct organisations must have
	// signed a checkpoint (k of n; at least 1). Checkpoints are asked for
	// with min_cosigners = MinSigners.
	MinSigners int

	genesis  *pb.Genesis
	origin   string
	checker  *ledger.Checker
	registry *ledger.Registry
}

// New returns a Verifier trusting the genesis file's exact bytes.
func New(genesis []byte) (*Verifier, error) {
	g, err := ledger.ParseGenesis(genesis)
	if err != nil {
		return nil, err
	}
	reg, err := ledger.NewRegistry(g)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256(genesis)
	return &Verifier{genesis: g, origin: "gpuledger/" + hex.EncodeToString(id[:]), registry: reg, checker: ledger.NewChecker(genesis)}, nil
}

// Origin returns the checkpoint origin of the trusted ledger.
func (v *Verifier) Origin() string { return v.origin }

// Checkpoint is a verified checkpoint.
type Checkpoint struct {
	Size    uint64
	Root    tlog.Hash
	Signers []string
	Note    string
	// MapRoot is the serial map's root the checkpoint commits to (its
	// serial-map line), nil when it carries none.
	MapRoot *smt.Hash
}

// Checkpoint verifies a signed checkpoint note against the genesis's nodes:
// this ledger's origin, a well-formed body, nodes of MinSigners distinct
// organisations.
func (v *Verifier) Checkpoint(text string) (*Checkpoint, error) { return v.CheckpointWith(text, nil) }

// CheckpointWith verifies a checkpoint against the nodes of the registry:
// the genesis's and those added by the given registry-change entries (whose
// regulator signatures are checked here) at an index below the checkpoint's
// size.
func (v *Verifier) CheckpointWith(text string, registry []*pb.Entry) (*Checkpoint, error) {
	verifiers := []note.Verifier{}
	addedAt := map[string]uint64{}
	operator := map[string]string{}
	for _, n := range v.genesis.GetNodes() {
		operator[n.GetName()] = n.GetParticipantId()
		nv, err := note.NewVerifier(n.GetVerifierKey())
		if err != nil {
			return nil, err
		}
		verifiers = append(verifiers, nv)
		addedAt[n.GetName()] = 0
	}
	reg := v.registry
	for _, e := range registry {
		if v.checker.Check(e, reg) != nil {
			break // the registry is verified in full later; stop at the first bad entry
		}
		ch, err := registryChange(e.GetEnvelope())
		if err != nil {
			break
		}
		next, err := reg.WithChange(ch, e.GetIndex())
		if err != nil {
			break
		}
		reg = next
		if n := ch.GetAddNode(); n != nil {
			nv, err := note.NewVerifier(n.GetVerifierKey())
			if err == nil {
				verifiers = append(verifiers, nv)
				addedAt[n.GetName()] = e.GetIndex() + 1
				operator[n.GetName()] = n.GetParticipantId()
			}
		}
	}
	n, err := note.Open([]byte(text), note.VerifierList(verifiers...))
	if err != nil {
		return nil, fail(-1, "checkpoint is not signed by a node of this ledger's registry: %v", err)
	}
	// note accepts base64 whose unused bits are set, so one signature has
	// several spellings; a checkpoint has one.
	for _, s := range append(n.Sigs, n.UnverifiedSigs...) {
		if _, err := base64.StdEncoding.Strict().DecodeString(s.Base64); err != nil {
			return nil, fail(-1, "checkpoint signature of %s is not canonical base64", s.Name)
		}
	}
	origin, size, root, err := ledger.ParseCheckpointBody(n.Text)
	if err != nil {
		return nil, fail(-1, "%v", err)
	}
	if origin != v.origin {
		return nil, fail(-1, "checkpoint is for %q, not this ledger (%q)", origin, v.origin)
	}
	cp := &Checkpoint{Size: size, Root: root, Note: text}
	switch m, ok, err := ledger.CheckpointMapRoot(n.Text); {
	case err != nil:
		return nil, fail(-1, "%v", err)
	case ok:
		cp.MapRoot = &m
	}
	orgs := map[string]bool{}
	for _, s := range n.Sigs {
		if at, ok := addedAt[s.Name]; ok && at < size && !slices.Contains(cp.Signers, s.Name) {
			cp.Signers = append(cp.Signers, s.Name)
			orgs[operator[s.Name]] = true
		}
	}
	if k := max(v.MinSigners, 1); len(orgs) < k {
		return nil, fail(-1, "checkpoint signed by nodes of %d organisation(s) (%v); %d required", len(orgs), cp.Signers, k)
	}
	return cp, nil
}

// included checks an entry's inclusion proof against the checkpoint, from
// the entry's own bytes.
func included(cp *Checkpoint, e *pb.Entry, proof [][]byte) error {
	eh := sha256.Sum256(e.GetEnvelope())
	lh := ledger.LeafHash(e.GetIndex(), e.GetAcceptedAt().AsTime().UnixNano(), eh)
	hs := make(tlog.RecordProof, len(proof))
	for i, h := range proof {
		if len(h) != tlog.HashSize {
			return fmt.Errorf("proof hash %d has %d bytes", i, len(h))
		}
		hs[i] = tlog.Hash(h)
	}
	return tlog.CheckRecord(hs, int64(cp.Size), cp.Root, int64(e.GetIndex()), lh)
}

// Client is what the verifier asks a node for. Nothing it returns is
// trusted: every answer is checked.
type Client struct {
	Ledger   gpuledgerv1grpc.LedgerServiceClient
	Audit    gpuledgerv1grpc.AuditServiceClient
	Registry gpuledgerv1grpc.RegistryServiceClient
}

// NewClient returns a Client over a gRPC connection.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{gpuledgerv1grpc.NewLedgerServiceClient(conn), gpuledgerv1grpc.NewAuditServiceClient(conn), gpuledgerv1grpc.NewRegistryServiceClient(conn)}
}

// regChange is a verified registry change and its index.
type regChange struct {
	index  uint64
	change *pb.RegistryChange
}

// registryEntries fetches the log's registry-change entries (unverified).
func (c *Client) registryEntries(ctx context.Context) ([]*pb.Entry, error) {
	var entries []*pb.Entry
	for tok := ""; ; {
		r, err := c.Registry.ListRegistryChanges(ctx, &pb.ListRegistryChangesRequest{PageSize: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		entries = append(entries, r.GetEntries()...)
		if tok = r.GetNextPageToken(); tok == "" {
			return entries, nil
		}
	}
}

// registryHistory fetches, verifies and returns the log's registry changes
// below the checkpoint's size.
func (v *Verifier) registryHistory(ctx context.Context, c *Client, cp *Checkpoint) ([]regChange, error) {
	all, err := c.registryEntries(ctx)
	if err != nil {
		return nil, err
	}
	var entries []*pb.Entry
	for _, e := range all {
		if e.GetIndex() < cp.Size {
			entries = append(entries, e)
		}
	}
	return v.registryFrom(cp, entries, func(e *pb.Entry) ([][]byte, error) { return c.proof(ctx, e, cp) })
}

// registryFrom verifies registry-change entries (signatures under the
// registry so far, inclusion in cp) in order and returns them.
func (v *Verifier) registryFrom(cp *Checkpoint, entries []*pb.Entry, proof func(*pb.Entry) ([][]byte, error)) ([]regChange, error) {
	var out []regChange
	reg := v.registry
	for _, e := range entries {
		if e.GetIndex() >= cp.Size {
			return nil, fail(int64(e.GetIndex()), "registry change beyond the checkpoint (size %d)", cp.Size)
		}
		if len(out) > 0 && e.GetIndex() <= out[len(out)-1].index {
			return nil, fail(int64(e.GetIndex()), "registry changes out of order")
		}
		if err := v.checker.Check(e, reg); err != nil {
			return nil, fail(int64(e.GetIndex()), "registry change: signature check failed: %v", err)
		}
		hs, err := proof(e)
		if err != nil {
			return nil, err
		}
		if err := included(cp, e, hs); err != nil {
			return nil, fail(int64(e.GetIndex()), "registry change not included in the checkpoint of size %d: %v", cp.Size, err)
		}
		ch, err := registryChange(e.GetEnvelope())
		if err != nil {
			return nil, fail(int64(e.GetIndex()), "is not a registry change")
		}
		next, err := reg.WithChange(ch, e.GetIndex())
		if err != nil {
			return nil, fail(int64(e.GetIndex()), "registry change does not apply: %v", err)
		}
		reg = next
		out = append(out, regChange{e.GetIndex(), ch})
	}
	return out, nil
}

// proof fetches an entry's inclusion proof to the checkpoint.
func (c *Client) proof(ctx context.Context, e *pb.Entry, cp *Checkpoint) ([][]byte, error) {
	p, err := c.Audit.GetInclusionProof(ctx, &pb.GetInclusionProofRequest{LeafIndex: e.GetIndex(), TreeSize: cp.Size})
	if err != nil {
		return nil, fmt.Errorf("inclusion proof of entry %d: %w", e.GetIndex(), err)
	}
	return p.GetProof().GetHashes(), nil
}

// registryAt rebuilds the registry that judged the entry at index.
func (v *Verifier) registryAt(changes []regChange, index uint64) (*ledger.Registry, error) {
	reg := v.registry
	for _, c := range changes {
		if c.index >= index {
			break
		}
		next, err := reg.WithChange(c.change, c.index)
		if err != nil {
			return nil, err
		}
		reg = next
	}
	return reg, nil
}

// SerialReport is a verified serial history.
type SerialReport struct {
	Serial     string
	Checkpoint *Checkpoint
	// Trusted is the checkpoint trusted before, which Checkpoint was proved
	// to extend (nil on first use).
	Trusted *Checkpoint
	Entries []*pb.Entry
	// State is the serial's state as the custody rules give it from the
	// verified entries, at the checkpoint.
	State *pb.SerialState
	// Registry is the registry at the checkpoint (its policy judges
	// time-based findings).
	Registry *ledger.Registry
	// From is the place in the serial's history of the first entry verified
	// (0 is MANUFACTURED). Above 0 when the node serves this reader (read
	// scope scoped) the history from where it became party: links,
	// signatures and inclusion are verified from there, while the custody
	// rules, which need what came before, are not re-run (State is nil, and
	// the flags are the node's).
	From uint64
	// MapSize is the log size of the serial map the history was checked
	// against (its head and event count), 0 when the node keeps no map.
	MapSize uint64
}

// OpenFindings returns the serial's findings open at asOf, computed here
// from the verified entries alone: every flag the rules gave (they are never
// resolved), and the HANDOFF_UNCONFIRMED and SILENT the verified state has
// due at asOf under the checkpoint's policy.
func (r *SerialReport) OpenFindings(asOf time.Time) []*pb.Finding {
	pol := r.Registry.Policy()
	var out []*pb.Finding
	for _, e := range r.Entries {
		for i, f := range e.GetFlags() {
			if x := gaps.FromFlag(f, e.GetEvent(), e.GetIndex(), i, pol.Version()); x.GetTime().AsTime().Compare(asOf) <= 0 {
				out = append(out, x)
			}
		}
	}
	if r.State == nil {
		return out
	}
	return append(out, gaps.Due(r.State, asOf, gaps.WindowsOf(pol), pol.Version())...)
}

// LatestCheckpoint fetches and verifies the node's latest checkpoint and,
// with a trust store, checks that it extends the one trusted before (and
// trusts it from then on).
func (v *Verifier) LatestCheckpoint(ctx context.Context, c *Client, store *TrustStore) (cp, trusted *Checkpoint, err error) {
	cpr, err := c.Audit.GetCheckpoint(ctx, &pb.GetCheckpointRequest{MinCosigners: uint32(max(v.MinSigners, 1))})
	if err != nil {
		return nil, nil, err
	}
	registry, err := c.registryEntries(ctx)
	if err != nil {
		return nil, nil, err
	}
	if cp, err = v.CheckpointWith(cpr.GetCheckpoint().GetNote(), registry); err != nil {
		return nil, nil, err
	}
	if store != nil {
		if trusted, err = v.Advance(ctx, c, *store, cp); err != nil {
			return nil, trusted, err
		}
	}
	return cp, trusted, nil
}

// Serial verifies a serial's whole chain as of the node's latest checkpoint,
// which must extend the trust store's (when one is given).
func (v *Verifier) Serial(ctx context.Context, c *Client, serial string, store *TrustStore) (*SerialReport, error) {
	var entries []*pb.Entry
	var from uint64
	var mp *pb.MapProof
	var mcp *Checkpoint
	for tok := ""; ; {
		r, err := c.Ledger.ListSerialEvents(ctx, &pb.ListSerialEventsRequest{Serial: serial, PageSize: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		if tok == "" {
			from = r.GetFirstPosition()
			// What the node's serial map commits to for the serial, served
			// with the first page: the history must reach at least that far.
			if r.GetMapProof() != nil {
				if mp, mcp, err = v.checkMapProof(ctx, c, serial, r.GetMapProof(), r.GetMapCheckpoint()); err != nil {
					return nil, err
				}
			} else if mp, mcp, err = v.mapProof(ctx, c, serial); err != nil { // a node from before the map in responses
				return nil, err
			}
		}
		entries = append(entries, r.GetEntries()...)
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	// The checkpoint last: at least as new as the map proof and the pages,
	// so that all the map committed to is below it.
	cp, trusted, err := v.LatestCheckpoint(ctx, c, store)
	if err != nil {
		return nil, err
	}
	changes, err := v.registryHistory(ctx, c, cp)
	if err != nil {
		return nil, err
	}
	rep, err := v.chain(serial, from, cp, changes, entries, func(e *pb.Entry) ([][]byte, error) { return c.proof(ctx, e, cp) }, true)
	if err != nil {
		return nil, err
	}
	rep.Trusted = trusted
	switch {
	case mp != nil:
		if err := v.checkMap(ctx, c, serial, rep, mp, mcp); err != nil {
			return nil, err
		}
	case cp.MapRoot != nil:
		// The node's checkpoint commits to a serial map, and the node would
		// not prove the serial against it.
		return nil, fail(-1, "WITHHELD: the node's checkpoint commits to a serial map, and it gives no map proof of %s", serial)
	}
	return rep, nil
}

// mapProof fetches and checks the node's map proof for serial: its
// checkpoint signed by a node of this ledger, the proof leading to the
// checkpoint's map root, the value being the leaf of the head, count and
// state digest it names. It returns nil, nil for a node that keeps no map.
func (v *Verifier) mapProof(ctx context.Context, c *Client, serial string) (*pb.MapProof, *Checkpoint, error) {
	r, err := c.Audit.GetMapProof(ctx, &pb.GetMapProofRequest{Serial: serial})
	if st, ok := status.FromError(err); ok && (st.Code() == codes.Unimplemented || st.Code() == codes.FailedPrecondition) {
		return nil, nil, nil // a node (or store) from before the map
	}
	if err != nil {
		return nil, nil, fmt.Errorf("map proof of %s: %w", serial, err)
	}
	return v.checkMapProof(ctx, c, serial, r.GetProof(), r.GetCheckpoint())
}

// checkMapProof checks a serial's map proof served with a checkpoint (by
// GetMapProof, or beside the first page of ListSerialEvents).
func (v *Verifier) checkMapProof(ctx context.Context, c *Client, serial string, mp *pb.MapProof, cp *pb.Checkpoint) (*pb.MapProof, *Checkpoint, error) {
	one := *v
	one.MinSigners = 1
	mcp, err := one.checkpointOf(ctx, c, cp.GetNote())
	if err != nil {
		return nil, nil, fmt.Errorf("the checkpoint of the map proof of %s: %w", serial, err)
	}
	if mcp.MapRoot == nil {
		return nil, nil, fail(-1, "the checkpoint of the map proof of %s names no serial map", serial)
	}
	if err := serialMapProof(serial, mp, *mcp.MapRoot); err != nil {
		return nil, nil, err
	}
	return mp, mcp, nil
}

// serialMapProof checks a serial's map proof against a map root: the key is
// the serial's, the value the leaf of the head, count and state digest it
// names (or none), and the proof leads to the root.
func serialMapProof(serial string, mp *pb.MapProof, root smt.Hash) error {
	if key := ledger.MapKey(serial); !bytes.Equal(mp.GetKey(), key[:]) {
		return fail(-1, "the map proof is for key %x, not %s's", mp.GetKey(), serial)
	}
	var value *smt.Hash
	if len(mp.GetValue()) > 0 {
		if len(mp.GetStateDigest()) != 32 {
			return fail(-1, "the map proof of %s names no state digest", serial)
		}
		leaf := ledger.SerialLeaf(mp.GetHeadHash(), mp.GetEventCount(), mp.GetHeadIndex(), [32]byte(mp.GetStateDigest()))
		if !bytes.Equal(leaf[:], mp.GetValue()) {
			return fail(-1, "the map leaf of %s is not the head, count and state it names", serial)
		}
		value = &leaf
	}
	return mapProofLeads(mp, value, root, serial)
}

// mapProofLeads checks that mp proves value (nil: absence) at its key
// against root.
func mapProofLeads(mp *pb.MapProof, value *smt.Hash, root smt.Hash, what string) error {
	pr, err := smt.UnmarshalProof(mp.GetProof())
	if err != nil {
		return fail(-1, "the map proof of %s: %v", what, err)
	}
	if len(mp.GetKey()) != smt.HashSize {
		return fail(-1, "the map proof of %s has a key of %d bytes", what, len(mp.GetKey()))
	}
	if err := smt.Verify(root, smt.Hash(mp.GetKey()), value, pr); err != nil {
		return fail(-1, "the map proof of %s does not lead to the checkpoint's map root: %v", what, err)
	}
	return nil
}

// checkMap checks the verified history against what the map committed to:
// the map's checkpoint is a prefix of the one the history was verified
// against, and the history below the map's size ends at the map's head,
// with the map's event count. A node that withholds a serial's newest
// events, or serves an old map beside a new log, fails here.
func (v *Verifier) checkMap(ctx context.Context, c *Client, serial string, rep *SerialReport, mp *pb.MapProof, mcp *Checkpoint) error {
	cp := rep.Checkpoint
	if mcp.Size > cp.Size {
		return fail(-1, "WITHHELD: the node's map proof of %s is of log size %d, beyond its checkpoint of size %d", serial, mcp.Size, cp.Size)
	}
	if mcp.Size == cp.Size && (cp.MapRoot == nil || *cp.MapRoot != *mcp.MapRoot) {
		return fail(-1, "WITHHELD: two checkpoints of size %d name different serial maps", cp.Size)
	}
	if mcp.Size < cp.Size {
		r, err := c.Audit.GetConsistencyProof(ctx, &pb.GetConsistencyProofRequest{OldSize: mcp.Size, NewSize: cp.Size})
		if err != nil {
			return fmt.Errorf("consistency proof from %d to %d: %w", mcp.Size, cp.Size, err)
		}
		proof, ok := treeProof(r.GetProof().GetHashes())
		if !ok || tlog.CheckTree(proof, int64(cp.Size), cp.Root, int64(mcp.Size), mcp.Root) != nil {
			return fail(-1, "the map proof's checkpoint (size %d) is not a prefix of the checkpoint (size %d)", mcp.Size, cp.Size)
		}
	}
	if err := mapHead(serial, rep, mp, mcp.Size); err != nil {
		return err
	}
	rep.MapSize = mcp.Size
	return nil
}

// mapHead checks that the verified history, below log size size, ends at
// the head the map proof names, with its event count.
func mapHead(serial string, rep *SerialReport, mp *pb.MapProof, size uint64) error {
	mcp := &Checkpoint{Size: size}
	var head []byte
	var headIndex, count uint64
	for _, e := range rep.Entries {
		if e.GetIndex() < mcp.Size {
			head, headIndex, count = e.GetEntryHash(), e.GetIndex(), count+1
		}
	}
	if count > 0 {
		count += rep.From
	}
	if len(mp.GetValue()) == 0 {
		if count > 0 {
			return fail(-1, "WITHHELD: the node's map says %s has no entries at size %d, and it served %d", serial, mcp.Size, count)
		}
		return nil
	}
	if count != mp.GetEventCount() || !bytes.Equal(head, mp.GetHeadHash()) || headIndex != mp.GetHeadIndex() {
		return fail(-1, "WITHHELD: the node's map commits %s to %d events ending at entry %d (%x) at log size %d; the history it served has %d ending at entry %d (%x)",
			serial, mp.GetEventCount(), mp.GetHeadIndex(), mp.GetHeadHash(), mcp.Size, count, headIndex, head)
	}
	return nil
}

// chain verifies a serial's entries below the checkpoint: signatures under
// the registry of each index, inclusion, links from MANUFACTURED on, and the
// flags the custody rules give (flags are not in the Merkle leaf, so they
// are recomputed here from verified bytes; with checkFlags, the entries'
// reported flags must equal them).
func (v *Verifier) chain(serial string, from uint64, cp *Checkpoint, changes []regChange, entries []*pb.Entry, proof func(*pb.Entry) ([][]byte, error), checkFlags bool) (*SerialReport, error) {
	rep := &SerialReport{Serial: serial, Checkpoint: cp, From: from}
	var prev []byte
	var state *pb.SerialState
	for i, e := range entries {
		if e.GetIndex() >= cp.Size {
			break // newer than the checkpoint: verified next time
		}
		if i > 0 && e.GetIndex() <= entries[i-1].GetIndex() {
			return nil, fail(int64(e.GetIndex()), "entries out of order")
		}
		reg, err := v.registryAt(changes, e.GetIndex())
		if err != nil {
			return nil, err
		}
		if err := v.checker.Check(e, reg); err != nil {
			return nil, fail(int64(e.GetIndex()), "signature check failed: %v", err)
		}
		hs, err := proof(e)
		if err != nil {
			return nil, err
		}
		if err := included(cp, e, hs); err != nil {
			return nil, fail(int64(e.GetIndex()), "not included in the checkpoint of size %d: %v", cp.Size, err)
		}
		env, _ := ledger.DecodeEnvelope(e.GetEnvelope())
		ev := new(pb.CustodyEvent)
		if ledger.UnmarshalPayload(env, ev) != nil || ev.GetSerial() != serial {
			return nil, fail(int64(e.GetIndex()), "does not hold a custody event of %s", serial)
		}
		if i == 0 && from > 0 {
			prev = ev.GetPrevEventHash() // the reader sees the chain from here on
		}
		switch {
		case i == 0 && from == 0 && ev.GetType() != pb.EventType_EVENT_TYPE_MANUFACTURED:
			return nil, fail(int64(e.GetIndex()), "the chain does not start with MANUFACTURED")
		case i == 0 && from > 0 && ev.GetType() == pb.EventType_EVENT_TYPE_MANUFACTURED:
			return nil, fail(int64(e.GetIndex()), "the node says the history shown starts at event %d, and it starts with MANUFACTURED", from)
		case !bytes.Equal(ev.GetPrevEventHash(), prev):
			return nil, fail(int64(e.GetIndex()), "prev_event_hash %x does not link to the previous entry %x", ev.GetPrevEventHash(), prev)
		}
		h := sha256.Sum256(e.GetEnvelope())
		prev = h[:]
		if from > 0 {
			rep.Entries = append(rep.Entries, &pb.Entry{Index: e.GetIndex(), EntryHash: prev, AcceptedAt: e.GetAcceptedAt(),
				Envelope: e.GetEnvelope(), Event: ev, Flags: e.GetFlags()})
			continue
		}
		next, flags, rej := custody.Next(custody.Step{State: state, Event: ev, Actor: reg.Participant(ev.GetActor()), Index: e.GetIndex(), EntryHash: prev}, reg, reg.Policy())
		if rej != nil {
			return nil, fail(int64(e.GetIndex()), "breaks a custody rule the ledger enforces: %v", rej)
		}
		if checkFlags && !sameFlags(flags, e.GetFlags()) {
			return nil, fail(int64(e.GetIndex()), "the node reports flags %v; the rules give %v", flagKinds(e.GetFlags()), flagKinds(flags))
		}
		state = next
		rep.Entries = append(rep.Entries, &pb.Entry{Index: e.GetIndex(), EntryHash: prev, AcceptedAt: e.GetAcceptedAt(),
			Envelope: e.GetEnvelope(), Event: ev, Flags: flags}) // from the verified bytes only
	}
	if len(rep.Entries) == 0 {
		return nil, fail(-1, "serial %s has no entries in the checkpoint of size %d", serial, cp.Size)
	}
	reg, err := v.registryAt(changes, cp.Size)
	if err != nil {
		return nil, err
	}
	rep.State, rep.Registry = state, reg
	return rep, nil
}

// Story tells a verified history in plain words, one line per event.
func (r *SerialReport) Story() []string {
	var out []string
	for _, e := range r.Entries {
		ev := e.GetEvent()
		line := fmt.Sprintf("%s  %-14s by %s", ev.GetOccurredAt().AsTime().UTC().Format(time.RFC3339), strings.TrimPrefix(ev.GetType().String(), "EVENT_TYPE_"), ev.GetActor())
		if ev.GetCounterparty() != "" {
			if ev.GetType() == pb.EventType_EVENT_TYPE_SHIPPED {
				line += " to " + ev.GetCounterparty()
			} else {
				line += " from " + ev.GetCounterparty()
			}
		}
		loc := ev.GetLocation()
		if loc.GetSiteId() != "" {
			line += fmt.Sprintf(" at %s (%s)", loc.GetSiteId(), loc.GetCountry())
		} else if loc.GetCountry() != "" {
			line += " in " + loc.GetCountry()
		}
		for _, f := range e.GetFlags() {
			line += fmt.Sprintf(" [flag %s: %s]", strings.TrimPrefix(f.GetKind().String(), "FINDING_KIND_"), f.GetDetail())
		}
		out = append(out, fmt.Sprintf("entry %d: %s", e.GetIndex(), line))
	}
	return out
}

func flagKinds(fs []*pb.Flag) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = strings.TrimPrefix(f.GetKind().String(), "FINDING_KIND_")
	}
	return out
}

// sameFlags compares flags whole: kind, severity, detail, the participants
// and entries they name, and their country.
func sameFlags(a, b []*pb.Flag) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.Flag) bool { return proto.Equal(x, y) })
}

// checkpointOf verifies a checkpoint the node sent beside an answer (a
// receipt, a map proof): against the genesis's nodes, and only when that
// fails against the registry's later ones, fetched and checked then.
func (v *Verifier) checkpointOf(ctx context.Context, c *Client, note string) (*Checkpoint, error) {
	cp, err := v.Checkpoint(note)
	if err == nil {
		return cp, nil
	}
	reg, rerr := c.registryEntries(ctx)
	if rerr != nil {
		return nil, err
	}
	return v.CheckpointWith(note, reg)
}

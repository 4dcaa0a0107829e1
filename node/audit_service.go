package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

type auditService struct {
	gpuledgerv1grpc.UnimplementedAuditServiceServer
	n *Node
}

func (s *auditService) GetCheckpoint(ctx context.Context, req *pb.GetCheckpointRequest) (*pb.GetCheckpointResponse, error) {
	cp, err := s.checkpoint(ctx, req.GetMinCosigners())
	if err != nil {
		return nil, err
	}
	return &pb.GetCheckpointResponse{Checkpoint: cp}, nil
}

// checkpoint returns this node's latest checkpoint carrying node signatures
// of at least k organisations.
func (s *auditService) checkpoint(ctx context.Context, k uint32) (*pb.Checkpoint, error) {
	if max := operators(s.n.ledger.Registry()); int(k) > max {
		return nil, withInfo(codes.FailedPrecondition, ReasonUnsupported,
			fmt.Sprintf("min_cosigners %d: the registry's nodes belong to %d organisations; ask for at most that many", k, max), nil)
	}
	cp, err := s.n.cosigned(ctx, int(k))
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	return cp, nil
}

func (s *auditService) GetInclusionProof(ctx context.Context, req *pb.GetInclusionProofRequest) (*pb.GetInclusionProofResponse, error) {
	out := &pb.GetInclusionProofResponse{}
	size := req.GetTreeSize()
	if size == 0 {
		cp, err := s.n.ledger.Checkpoint(ctx)
		if err != nil {
			return nil, toStatus(ctx, s.n.log, err)
		}
		size, out.Checkpoint = cp.GetSize(), cp
	}
	if req.GetLeafIndex() >= size {
		return nil, invalid(fmt.Sprintf("leaf_index %d is not below tree_size %d", req.GetLeafIndex(), size))
	}
	e, err := s.n.ledger.Entry(ctx, req.GetLeafIndex())
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if err := s.n.entryVisible(ctx, e); err != nil {
		return nil, err
	}
	p, err := s.n.ledger.InclusionProof(ctx, req.GetLeafIndex(), size)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	out.Proof, out.LeafHash = p, e.GetLeafHash()
	return out, nil
}

func (s *auditService) GetConsistencyProof(ctx context.Context, req *pb.GetConsistencyProofRequest) (*pb.GetConsistencyProofResponse, error) {
	newSize := req.GetNewSize()
	if newSize == 0 {
		newSize = s.n.ledger.Size()
	}
	if req.GetOldSize() > newSize {
		return nil, invalid(fmt.Sprintf("old_size %d is greater than new_size %d", req.GetOldSize(), newSize))
	}
	p, err := s.n.ledger.ConsistencyProof(ctx, req.GetOldSize(), newSize)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	return &pb.GetConsistencyProofResponse{Proof: p}, nil
}

// VerifySerial re-checks a serial on the server: every entry's signatures
// under the registry of its index, the chain links, inclusion in the latest
// checkpoint, the custody rules replayed from the first entry (same flags),
// and the stored state's head.
func (s *auditService) VerifySerial(ctx context.Context, req *pb.VerifySerialRequest) (*pb.VerifySerialResponse, error) {
	if !custody.ValidSerial(req.GetSerial()) {
		return nil, invalid(fmt.Sprintf("serial %s: want 1 to 64 characters of A-Z a-z 0-9 . _ : / -", custody.Quote(req.GetSerial())))
	}
	party, err := s.n.visible(ctx, req.GetSerial())
	if err != nil {
		return nil, err
	}
	release, err := s.n.heavyCall(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	l := s.n.ledger
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	var entries []*pb.Entry
	for from := party.Position; ; {
		page, next, err := l.SerialHistory(ctx, req.GetSerial(), from, maxPageSize)
		if err != nil {
			return nil, toStatus(ctx, s.n.log, err)
		}
		entries = append(entries, page...)
		if next == 0 {
			break
		}
		from = next
	}
	entries = slices.DeleteFunc(entries, func(e *pb.Entry) bool { return e.GetIndex() >= cp.GetSize() })
	out := &pb.VerifySerialResponse{Checkpoint: cp, EntriesChecked: uint64(len(entries))}
	if out.MapProof, out.MapCheckpoint, err = s.n.serialMapProof(ctx, req.GetSerial()); err != nil {
		return nil, err
	}
	problem := func(format string, args ...any) { out.Problems = append(out.Problems, fmt.Sprintf(format, args...)) }
	idx := make([]uint64, len(entries))
	for i, e := range entries {
		idx[i] = e.GetIndex()
	}
	proofs, err := l.InclusionProofs(ctx, idx, cp.GetSize())
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	var root tlog.Hash
	copy(root[:], cp.GetRootHash())
	var state *pb.SerialState
	var prev []byte
	if party.Position > 0 && len(entries) > 0 {
		// The caller sees the history from where it became party: links,
		// signatures and inclusion from there; the rules need what is before.
		prev = entries[0].GetEvent().GetPrevEventHash()
	}
	for i, e := range entries {
		reg, err := l.RegistryAt(ctx, e.GetIndex())
		if err != nil {
			return nil, toStatus(ctx, s.n.log, err)
		}
		if err := l.CheckEntry(e, reg); err != nil {
			problem("entry %d: %v", e.GetIndex(), err)
		}
		eh := sha256.Sum256(e.GetEnvelope())
		lh := ledger.LeafHash(e.GetIndex(), e.GetAcceptedAt().AsTime().UnixNano(), eh)
		var hs tlog.RecordProof
		for _, h := range proofs[i].GetHashes() {
			hs = append(hs, tlog.Hash(h))
		}
		if err := tlog.CheckRecord(hs, int64(cp.GetSize()), root, int64(e.GetIndex()), lh); err != nil {
			problem("entry %d: not included in the checkpoint of size %d: %v", e.GetIndex(), cp.GetSize(), err)
		}
		ev := e.GetEvent()
		if ev == nil || ev.GetSerial() != req.GetSerial() {
			problem("entry %d: does not hold a custody event of %s", e.GetIndex(), req.GetSerial())
			continue
		}
		if !bytes.Equal(ev.GetPrevEventHash(), prev) {
			problem("entry %d: prev_event_hash %x does not link to the previous entry %x", e.GetIndex(), ev.GetPrevEventHash(), prev)
		}
		prev = eh[:]
		if party.Position > 0 {
			continue
		}
		next, flags, rej := custody.Next(custody.Step{State: state, Event: ev, Actor: reg.Participant(ev.GetActor()), Index: e.GetIndex(), EntryHash: eh[:]}, reg, reg.Policy())
		if rej != nil {
			problem("entry %d: breaks a custody rule: %v", e.GetIndex(), rej)
			continue
		}
		if !sameFlags(flags, e.GetFlags()) {
			problem("entry %d: stored flags %v differ from the rules' %v", e.GetIndex(), kinds(e.GetFlags()), kinds(flags))
		}
		state = next
	}
	if st, err := l.Serial(ctx, req.GetSerial()); err == nil && len(entries) > 0 && st.GetLastIndex() < cp.GetSize() {
		if !bytes.Equal(st.GetHeadHash(), prev) || st.GetEventCount() != party.Position+uint64(len(entries)) {
			problem("serial state names head %x after %d events; the chain ends at %x after %d", st.GetHeadHash(), st.GetEventCount(), prev, party.Position+uint64(len(entries)))
		}
	}
	out.Ok = len(out.Problems) == 0
	return out, nil
}

func kinds(fs []*pb.Flag) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.GetKind().String()
	}
	return out
}

// sameFlags compares flags whole (kind, severity, detail, participants,
// related entries, country).
func sameFlags(a, b []*pb.Flag) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.Flag) bool { return proto.Equal(x, y) })
}

// GetCustodyPassport bundles a serial's entries, the registry entries, their
// inclusion proofs to one signed checkpoint and the genesis, for offline
// verification.
func (s *auditService) GetCustodyPassport(ctx context.Context, req *pb.GetCustodyPassportRequest) (*pb.GetCustodyPassportResponse, error) {
	if !custody.ValidSerial(req.GetSerial()) {
		return nil, invalid(fmt.Sprintf("serial %s: want 1 to 64 characters of A-Z a-z 0-9 . _ : / -", custody.Quote(req.GetSerial())))
	}
	party, err := s.n.visible(ctx, req.GetSerial())
	if err != nil {
		return nil, err
	}
	release, err := s.n.heavyCall(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	l := s.n.ledger
	// The checkpoint, and the serial's and the registry's map proofs for its
	// size (read at the size the proofs were: a cosigned checkpoint is
	// gathered for the current size, and asked again if a batch came
	// between).
	var cp *pb.Checkpoint
	var sp, rp ledger.SerialMapProof
	haveMap := true
	for attempt := 0; ; attempt++ {
		sp, rp, err = l.ProveSerialAndRegistry(req.GetSerial())
		if errors.Is(err, ledger.ErrNoMap) {
			haveMap = false
		} else if err != nil {
			return nil, toStatus(ctx, s.n.log, err)
		}
		if haveMap && req.GetMinCosigners() <= 1 {
			if cp, err = l.SignCheckpointAt(ctx, sp.Size); err != nil {
				return nil, toStatus(ctx, s.n.log, err)
			}
		} else if cp, err = s.checkpoint(ctx, req.GetMinCosigners()); err != nil {
			return nil, err
		}
		if !haveMap || cp.GetSize() == sp.Size {
			break
		}
		if attempt == 4 {
			// Writes keep moving the log between the cosigned checkpoint and
			// the map proofs: a passport without them would not verify.
			return nil, withInfo(codes.Unavailable, ReasonStale, "the log grew while the passport's checkpoint was being cosigned, five times; retry", nil)
		}
	}
	p := &pb.CustodyPassport{Genesis: l.Genesis(), Serial: req.GetSerial(), Checkpoint: cp,
		Policy: l.Registry().Policy().Proto(), Participants: l.Registry().Participants()}
	p.FirstPosition = party.Position
	below := func(first uint64, page func(from uint64, limit int) ([]*pb.Entry, uint64, error)) ([]*pb.Entry, error) {
		var out []*pb.Entry
		for from := first; ; {
			es, next, err := page(from, maxPageSize)
			if err != nil {
				return nil, err
			}
			for _, e := range es {
				if e.GetIndex() < cp.GetSize() {
					// A verifier decodes the envelope itself: the
					// decoded payload would only double the passport.
					e.Event, e.RegistryChange = nil, nil
					out = append(out, e)
				}
			}
			if next == 0 {
				return out, nil
			}
			from = next
		}
	}
	if p.Entries, err = below(party.Position, func(from uint64, limit int) ([]*pb.Entry, uint64, error) {
		return l.SerialHistory(ctx, req.GetSerial(), from, limit)
	}); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if k := s.n.cfg.WithholdLast; k > 0 { // a lying node, for tests
		p.Entries = p.Entries[:max(0, len(p.Entries)-k)]
	}
	if haveMap {
		if p.MapProof, err = mapProofMessage(ledger.MapKey(req.GetSerial()), sp); err != nil {
			return nil, toStatus(ctx, s.n.log, err)
		}
		if p.RegistryMapProof, err = mapProofMessage(ledger.RegistryMapKey, rp); err != nil {
			return nil, toStatus(ctx, s.n.log, err)
		}
	}
	if p.RegistryEntries, err = below(0, func(from uint64, limit int) ([]*pb.Entry, uint64, error) {
		return l.RegistryEntries(ctx, from, limit)
	}); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	proofs := func(es []*pb.Entry) ([]*pb.InclusionProof, error) {
		idx := make([]uint64, len(es))
		for i, e := range es {
			idx[i] = e.GetIndex()
		}
		return l.InclusionProofs(ctx, idx, cp.GetSize())
	}
	if p.InclusionProofs, err = proofs(p.Entries); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if p.RegistryInclusionProofs, err = proofs(p.RegistryEntries); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if size := proto.Size(p); size > maxPassportBytes {
		return nil, withInfo(codes.ResourceExhausted, custody.ReasonTooLarge, fmt.Sprintf(
			"the passport of %s would be %d bytes, more than the %d one message carries: verify the serial with gpuledger verify SERIAL, which reads its history page by page",
			req.GetSerial(), size, maxPassportBytes), nil)
	}
	return &pb.GetCustodyPassportResponse{Passport: p}, nil
}

// maxPassportBytes is the largest passport a node sends (its gRPC send
// limit is 64 MiB). With the policy's limits (max_evidence_bytes and
// serial_bytes_per_window) a GPU's history grows slowly: 10 years of daily
// attestations with 2 KiB of evidence make a passport of about 20 MB.
const maxPassportBytes = 60 << 20

// heavyCalls bounds the calls that hold a whole serial's history in memory
// at once (VerifySerial, GetCustodyPassport): more wait their turn.
const heavyCalls = 2

// heavyCall waits for one of heavyCalls slots and returns its release.
func (n *Node) heavyCall(ctx context.Context) (func(), error) {
	select {
	case n.heavy <- struct{}{}:
		return func() { <-n.heavy }, nil
	case <-ctx.Done():
		return nil, toStatus(ctx, n.log, ctx.Err())
	}
}

// GetMapProof proves a serial's map leaf (or its absence), or the
// registry's, against a checkpoint this node signs for the log size the
// proof was read at.
func (s *auditService) GetMapProof(ctx context.Context, req *pb.GetMapProofRequest) (*pb.GetMapProofResponse, error) {
	l := s.n.ledger
	var p ledger.SerialMapProof
	var err error
	switch {
	case req.GetRegistry() && req.GetSerial() != "":
		return nil, invalid("give a serial or registry, not both")
	case req.GetRegistry():
		p.Size, p.Root, p.Value, p.Proof, err = l.MapProof(ledger.RegistryMapKey)
	case !custody.ValidSerial(req.GetSerial()):
		return nil, invalid(fmt.Sprintf("serial %s: want 1 to 64 characters of A-Z a-z 0-9 . _ : / -, or registry", custody.Quote(req.GetSerial())))
	default:
		if _, err := s.n.visible(ctx, req.GetSerial()); err != nil {
			return nil, err
		}
		p, err = l.ProveSerial(req.GetSerial())
	}
	if errors.Is(err, ledger.ErrNoMap) {
		return nil, withInfo(codes.FailedPrecondition, ReasonUnsupported, err.Error(), nil)
	}
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	cp, err := s.n.checkpointAt(ctx, p.Size)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	key := ledger.RegistryMapKey
	if !req.GetRegistry() {
		key = ledger.MapKey(req.GetSerial())
	}
	out, err := mapProofMessage(key, p)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	return &pb.GetMapProofResponse{Checkpoint: cp, Proof: out}, nil
}

// checkpointAt is a checkpoint this node signs at log size size: its
// latest (signed once per size) when that is the size.
func (n *Node) checkpointAt(ctx context.Context, size uint64) (*pb.Checkpoint, error) {
	if cp, err := n.ledger.Checkpoint(ctx); err != nil || cp.GetSize() == size {
		return cp, err
	}
	return n.ledger.SignCheckpointAt(ctx, size)
}

// serialMapProof proves serial's map leaf (or its absence) with a
// checkpoint signed at the proof's log size, for the responses that serve
// a serial (GetSerial, ListSerialEvents, VerifySerial); nil, nil from a
// store that keeps no map. The caller has checked that the serial is
// visible to the caller.
func (n *Node) serialMapProof(ctx context.Context, serial string) (*pb.MapProof, *pb.Checkpoint, error) {
	p, err := n.ledger.ProveSerial(serial)
	if errors.Is(err, ledger.ErrNoMap) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, toStatus(ctx, n.log, err)
	}
	cp, err := n.checkpointAt(ctx, p.Size)
	if err != nil {
		return nil, nil, toStatus(ctx, n.log, err)
	}
	mp, err := mapProofMessage(ledger.MapKey(serial), p)
	if err != nil {
		return nil, nil, toStatus(ctx, n.log, err)
	}
	return mp, cp, nil
}

// mapProofMessage is a map proof on the wire, with what a serial's leaf
// commits to when p carries the serial's state.
func mapProofMessage(key smt.Hash, p ledger.SerialMapProof) (*pb.MapProof, error) {
	enc, err := p.Proof.Marshal()
	if err != nil {
		return nil, err
	}
	out := &pb.MapProof{Key: key[:], Proof: enc}
	if p.Value != nil {
		out.Value = p.Value[:]
	}
	if p.State != nil {
		st := new(pb.SerialState)
		if err := proto.Unmarshal(p.State, st); err != nil {
			return nil, err
		}
		d := sha256.Sum256(p.State)
		out.HeadHash, out.EventCount, out.HeadIndex, out.StateDigest = st.GetHeadHash(), st.GetEventCount(), st.GetLastIndex(), d[:]
	}
	return out, nil
}

package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// AllReport is the outcome of verifying a whole log, or the part of it
// after an audit store's mark.
type AllReport struct {
	From     uint64 // the first entry verified this run (0: the whole log)
	Entries  uint64 // the log size verified up to
	Root     [32]byte
	Serials  int
	Registry int // registry-change entries applied this run
	Failures []*Failure
	// Truncated says there were more failures than kept.
	Truncated bool
	// MapRoot is the serial map rebuilt from the verified log at Entries,
	// once Commit has run.
	MapRoot *smt.Hash
}

// FirstProblem says what failed at the lowest failing index.
func (r *AllReport) FirstProblem() string {
	first := r.First()
	for _, f := range r.Failures {
		if f.Index == first {
			return f.What
		}
	}
	return ""
}

// OK reports whether nothing failed.
func (r *AllReport) OK() bool { return len(r.Failures) == 0 }

// First returns the lowest failing index, or -1.
func (r *AllReport) First() int64 {
	first := int64(-1)
	for _, f := range r.Failures {
		if first < 0 || (f.Index >= 0 && f.Index < first) {
			first = f.Index
		}
	}
	return first
}

const maxFailures = 100

// All verifies a log streamed from index 0 by next (which returns nil at the
// end): every entry's index, its leaf (recomputed from its bytes) into a
// Merkle root, its signatures under the registry rebuilt from the genesis and
// the log's registry changes (in parallel on all cores), every serial's
// chain links, the custody rules over every event (with the flags the node
// reports), and the serial map that follows, rebuilt in memory. Memory grows
// with the number of serials, not of entries. progress, if set, is called
// with the entries seen so far.
func (v *Verifier) All(ctx context.Context, next func() (*pb.Entry, error), progress func(uint64)) (*AllReport, error) {
	s := v.NewStream()
	defer s.Close()
	if err := s.Run(ctx, next, progress); err != nil {
		return nil, err
	}
	rep, err := s.Finish()
	if err != nil || !rep.OK() {
		return rep, err
	}
	_, err = s.Commit()
	return rep, err
}

// Run feeds the stream from next until it returns nil or the stream stops
// at a missing entry.
func (s *Stream) Run(ctx context.Context, next func() (*pb.Entry, error), progress func(uint64)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := next()
		if err != nil {
			return err
		}
		if e == nil {
			return nil
		}
		if err := s.Add(e); err != nil {
			return err
		}
		if progress != nil && e.GetIndex()%4096 == 0 {
			progress(e.GetIndex())
		}
		if s.stopped {
			return nil
		}
	}
}

// Stream verifies a log fed to it entry by entry, in order (see All),
// rebuilding every serial's state and the serial map in an audit store.
// Add and Finish must be called from one goroutine; Close releases the
// signature-checking goroutines.
type Stream struct {
	v        *Verifier
	rep      *AllReport
	rng      *compact.Range
	reg      *ledger.Registry
	next     uint64
	stopped  bool
	mu       sync.Mutex
	jobs     chan *streamJob // to the signature checkers
	order    chan *streamJob // to the sequencer, in log order
	wg       sync.WaitGroup  // the checkers and the sequencer
	store    *ledger.AuditStore
	ownStore bool
	// fresh: the store held nothing at the start, so a serial not in
	// states has no state.
	fresh      bool
	states     map[string]*pb.SerialState // changed since the store's mark
	changes    []ledger.AuditChange       // registry changes since the mark
	regChanges uint64                     // registry changes up to next
	regLast    uint64
	serials    uint64
	// What the last Commit wrote, for MapMismatch: the mark it replaced
	// and the states it committed.
	prevMark  *ledger.AuditMark
	committed map[string]*pb.SerialState
}

// A streamJob is a custody-event entry on its way through the stream: a
// checker decodes it and checks its signatures (in parallel), then the
// sequencer takes it in log order for the Merkle tree, the links and the
// state.
type streamJob struct {
	e    *pb.Entry
	reg  *ledger.Registry
	done chan struct{} // closed by the checker
	ev   *pb.CustodyEvent
	hash [32]byte
	err  error
}

var rangeFactory = compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// NewStream starts a stream verifier from entry 0, with an audit store in
// memory.
func (v *Verifier) NewStream() *Stream {
	store, err := ledger.OpenAuditStore("")
	if err != nil {
		panic(err) // an in-memory badger opens, or nothing does
	}
	s := &Stream{v: v, rep: &AllReport{}, rng: rangeFactory.NewEmptyRange(0), reg: v.registry, store: store, ownStore: true, fresh: true,
		states: map[string]*pb.SerialState{}}
	s.start()
	return s
}

// ResumeStream starts a stream verifier where the audit store's mark
// says the last run stopped (from entry 0 when it has none): its Merkle
// tree's right edge, its registry rebuilt from the genesis and the
// registry changes it holds, its serials' states.
func (v *Verifier) ResumeStream(store *ledger.AuditStore) (*Stream, error) {
	m, err := store.Mark()
	if err != nil {
		return nil, err
	}
	s := &Stream{v: v, rep: &AllReport{}, rng: rangeFactory.NewEmptyRange(0), reg: v.registry, store: store, fresh: m == nil,
		states: map[string]*pb.SerialState{}}
	if m != nil {
		if s.rng, err = rangeFactory.NewRange(0, m.Size, m.Range); err != nil {
			return nil, fmt.Errorf("the audit store's mark: %w", err)
		}
		if root, err := s.root(); err != nil || root != m.Root {
			return nil, fmt.Errorf("the audit store's mark does not hold together (its tree edge gives root %x, it says %x): run with --from-scratch", root[:], m.Root[:])
		}
		err := store.RegistryChanges(func(index uint64, envelope []byte) error {
			ch, err := registryChange(envelope)
			if err != nil {
				return err
			}
			next, err := s.reg.WithChange(ch, index)
			if err != nil {
				return err
			}
			s.reg = next
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("the audit store's registry changes: %w", err)
		}
		s.next, s.regChanges, s.regLast, s.serials = m.Size, m.Changes, m.LastChange, m.Serials
		s.rep.From = m.Size
	}
	s.start()
	return s, nil
}

// Next is the index of the entry the stream expects next.
func (s *Stream) Next() uint64 { return s.next }

// State returns a serial's state as rebuilt so far, or nil.
func (s *Stream) State(serial string) (*pb.SerialState, error) {
	if st, ok := s.states[serial]; ok || s.fresh {
		return st, nil
	}
	return s.store.State(serial)
}

func (s *Stream) fail(f *Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rep.Failures) < maxFailures {
		s.rep.Failures = append(s.rep.Failures, f)
	} else {
		s.rep.Truncated = true
	}
}

// start runs a pool of signature checkers on GOMAXPROCS goroutines, and
// the sequencer.
func (s *Stream) start() {
	s.jobs, s.order = make(chan *streamJob, 1024), make(chan *streamJob, 4096)
	jobs, order := s.jobs, s.order
	for range runtime.GOMAXPROCS(0) {
		s.wg.Go(func() {
			for j := range jobs {
				// The stream recomputes the Merkle root over every entry, so
				// the bytes are bound; the caller compares the root.
				j.ev, j.hash, j.err = s.v.checker.CheckBoundEvent(j.e, j.reg)
				close(j.done)
			}
		})
	}
	s.wg.Go(func() {
		for j := range order {
			<-j.done
			s.sequence(j)
		}
	})
}

// Wait blocks until every entry added so far has been checked and
// sequenced.
func (s *Stream) Wait() {
	close(s.jobs)
	close(s.order)
	s.wg.Wait()
	s.start()
}

// Close stops the checkers (after the queued checks), and closes the
// audit store when the stream opened it.
func (s *Stream) Close() {
	if s.jobs != nil {
		close(s.jobs)
		close(s.order)
		s.wg.Wait()
		s.jobs = nil
	}
	if s.ownStore && s.store != nil {
		s.store.Close()
		s.store = nil
	}
}

// Add verifies the next entry. Problems are recorded as failures; the error
// is for the stream itself.
func (s *Stream) Add(e *pb.Entry) error {
	if s.stopped {
		return nil
	}
	i := s.next
	if e.GetIndex() != i {
		s.fail(fail(int64(i), "entry %d is missing: the log goes on with entry %d", i, e.GetIndex()))
		s.stopped = true
		return nil
	}
	s.next++
	if payloadType(e.GetEnvelope()) != dsse.RegistryChangeType {
		j := &streamJob{e: e, reg: s.reg, done: make(chan struct{})}
		s.jobs <- j
		s.order <- j
		return nil
	}
	s.Wait() // every earlier check sees the registry of its own index
	eh := sha256.Sum256(e.GetEnvelope())
	if err := s.appendLeaf(e, eh); err != nil {
		return err
	}
	if err := s.v.checker.Check(e, s.reg); err != nil {
		s.fail(fail(int64(i), "registry change: %v", err))
		return nil
	}
	ch, err := registryChange(e.GetEnvelope())
	if err != nil {
		s.fail(fail(int64(i), "registry change: %v", err))
		return nil
	}
	next, err := s.reg.WithChange(ch, i)
	if err != nil {
		s.fail(fail(int64(i), "registry change does not apply: %v", err))
		return nil
	}
	s.reg = next
	s.rep.Registry++
	s.regChanges, s.regLast = s.regChanges+1, i
	s.changes = append(s.changes, ledger.AuditChange{Index: i, Envelope: e.GetEnvelope()})
	return nil
}

// payloadType reads an envelope's payload_type (field 1) without decoding
// the rest, as protobuf decodes it: the last occurrence wins, so that the
// stream routes an envelope as the checkers will decode it (one that names
// the field twice is not canonical, and the registry path's check refuses
// it). "" when the bytes do not parse (the checker then says why).
func payloadType(b []byte) string {
	var last []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			last, b = v, b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return ""
		}
		b = b[n:]
	}
	return string(last)
}

// registryChange decodes a registry-change envelope's payload.
func registryChange(envelope []byte) (*pb.RegistryChange, error) {
	env, rej := ledger.DecodeEnvelope(envelope)
	if rej != nil {
		return nil, rej
	}
	ch := new(pb.RegistryChange)
	if err := ledger.UnmarshalPayload(env, ch); err != nil {
		return nil, err
	}
	return ch, nil
}

func (s *Stream) appendLeaf(e *pb.Entry, eh [32]byte) error {
	lh := ledger.LeafHash(e.GetIndex(), e.GetAcceptedAt().AsTime().UnixNano(), eh)
	return s.rng.Append(lh[:], nil)
}

// sequence takes a checked custody-event entry in log order: its leaf into
// the Merkle tree, its link to the serial's head, and the serial's next
// state under the rules, with the flags the node reports.
func (s *Stream) sequence(j *streamJob) {
	e, i, eh := j.e, int64(j.e.GetIndex()), j.hash
	if err := s.appendLeaf(e, eh); err != nil {
		s.fail(fail(i, "merkle tree: %v", err))
		return
	}
	if j.err != nil {
		s.fail(fail(i, "signature check failed: %v", j.err))
	}
	ev := j.ev
	if ev == nil {
		if j.err == nil { // routed as an event, decoded as none: never skip it unsaid
			s.fail(fail(i, "the entry is not a custody event"))
		}
		return
	}
	serial := ev.GetSerial()
	st, err := s.State(serial)
	if err != nil {
		s.fail(fail(i, "serial %s: the audit store: %v", serial, err))
		return
	}
	switch {
	case st == nil && ev.GetType() != pb.EventType_EVENT_TYPE_MANUFACTURED:
		s.fail(fail(i, "serial %s starts without MANUFACTURED", serial))
	case st != nil && !bytes.Equal(ev.GetPrevEventHash(), st.GetHeadHash()):
		s.fail(fail(i, "serial %s: prev_event_hash %x does not link to its previous entry %x", serial, ev.GetPrevEventHash(), st.GetHeadHash()))
	default:
		// The state Apply made of it, whose digest the serial's map leaf
		// commits to; and the flags the rules give, which the node reports
		// beside the entry (they are not in its Merkle leaf).
		next, flags, rej := ledger.NextState(j.reg, st, ev, e.GetEnvelope(), eh[:], uint64(i), e.GetAcceptedAt().AsTime())
		switch {
		case rej != nil:
			s.fail(fail(i, "serial %s: the node accepted an event the ledger's rules refuse: %v", serial, rej))
		case !sameFlags(flags, e.GetFlags()):
			s.fail(fail(i, "serial %s: the node reports flags %v; the rules give %v", serial, flagKinds(e.GetFlags()), flagKinds(flags)))
		default:
			if st == nil {
				s.serials++
			}
			s.states[serial] = next
		}
	}
}

// Finish waits for the queued checks and returns the report: the entries
// verified up to Next and the Merkle root there.
func (s *Stream) Finish() (*AllReport, error) {
	s.Wait()
	root, err := s.root()
	if err != nil {
		return nil, err
	}
	s.rep.Entries, s.rep.Root, s.rep.Serials = s.next, root, int(s.serials)
	return s.rep, nil
}

func (s *Stream) root() ([32]byte, error) {
	var root [32]byte
	if s.rng.End() == 0 {
		copy(root[:], rfc6962.DefaultHasher.EmptyRoot())
		return root, nil
	}
	r, err := s.rng.GetRootHash(nil)
	copy(root[:], r)
	return root, err
}

// Commit writes what the stream rebuilt up to Next to its audit store
// (every changed serial's state, the registry changes, the tree's edge)
// and returns the serial map's root there, which the caller compares with
// the checkpoint's. Call it only after Finish has reported no failures and
// the root was the checkpoint's: the store then holds a verified prefix of
// the log, which the next run resumes from.
func (s *Stream) Commit() (smt.Hash, error) {
	rep, err := s.Finish()
	if err != nil {
		return smt.Hash{}, err
	}
	if !rep.OK() {
		return smt.Hash{}, fmt.Errorf("the log did not verify: nothing to commit")
	}
	prev, err := s.store.Mark()
	if err != nil {
		return smt.Hash{}, fmt.Errorf("audit store: %w", err)
	}
	mark := ledger.AuditMark{Size: s.next, Root: rep.Root, Range: s.rng.Hashes(), Changes: s.regChanges, LastChange: s.regLast, Serials: s.serials}
	root, err := s.store.Commit(mark, s.states, s.reg, s.changes)
	if err != nil {
		return root, fmt.Errorf("audit store: %w", err)
	}
	s.rep.MapRoot = &root
	s.prevMark, s.committed = prev, s.states
	s.fresh, s.states, s.changes = false, map[string]*pb.SerialState{}, nil
	return root, nil
}

// MapMismatch explains why checkpoint cp's serial map root is not the one
// the last Commit rebuilt at its size, naming the serials it misstates where
// it can: when the root is that of the map the commit before had verified,
// every serial changed since is left out of it; otherwise the node is asked
// to prove the serials changed since (newest first, at most limit), and a
// proof that leads to the checkpoint's root with a leaf that is not the
// rebuilt one names its serial.
func (s *Stream) MapMismatch(ctx context.Context, c *Client, cp *Checkpoint, limit int) *Failure {
	prev, states, rebuilt := s.prevMark, s.committed, *s.rep.MapRoot
	changed := make([]string, 0, len(states))
	for k := range states {
		changed = append(changed, k)
	}
	sort.Slice(changed, func(i, j int) bool { return states[changed[i]].GetLastIndex() > states[changed[j]].GetLastIndex() })
	names := func(ss []string) string {
		if len(ss) > 5 {
			return fmt.Sprintf("%s and %d more", strings.Join(ss[:5], ", "), len(ss)-5)
		}
		return strings.Join(ss, ", ")
	}
	if prev != nil && *cp.MapRoot == prev.MapRoot && prev.Size < cp.Size {
		return fail(-1, "WITHHELD: the checkpoint of size %d signs the serial map of log size %d (verified before): it leaves out every event since, of %s",
			cp.Size, prev.Size, names(changed))
	}
	for i, serial := range changed {
		if i == limit || ctx.Err() != nil {
			break
		}
		r, err := c.Audit.GetMapProof(ctx, &pb.GetMapProofRequest{Serial: serial})
		if err != nil {
			break
		}
		mcp, err := s.v.checkpointOf(ctx, c, r.GetCheckpoint().GetNote())
		if err != nil || mcp.Size != cp.Size || mcp.MapRoot == nil || *mcp.MapRoot != *cp.MapRoot {
			continue // a proof of another map: it says nothing of this one
		}
		if serialMapProof(serial, r.GetProof(), *cp.MapRoot) != nil {
			continue
		}
		mp, st := r.GetProof(), states[serial]
		if len(mp.GetValue()) == 0 {
			return fail(int64(st.GetLastIndex()), "WITHHELD: the checkpoint of size %d signs a serial map without %s; the log holds %d of its events, the last at entry %d",
				cp.Size, serial, st.GetEventCount(), st.GetLastIndex())
		}
		if mp.GetEventCount() != st.GetEventCount() || mp.GetHeadIndex() != st.GetLastIndex() || !bytes.Equal(mp.GetHeadHash(), st.GetHeadHash()) {
			return fail(int64(st.GetLastIndex()), "WITHHELD: the checkpoint of size %d signs a serial map that commits %s to %d events ending at entry %d; the log holds %d, ending at entry %d",
				cp.Size, serial, mp.GetEventCount(), mp.GetHeadIndex(), st.GetEventCount(), st.GetLastIndex())
		}
		if b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(st); err == nil && sha256.Sum256(b) != [32]byte(mp.GetStateDigest()) {
			return fail(int64(st.GetLastIndex()), "the checkpoint of size %d signs a serial map whose state of %s is not the one its events give", cp.Size, serial)
		}
	}
	return fail(-1, "the checkpoint of size %d signs serial map root %x; the log rebuilds it to %x: the node's map misstates a serial (of %s) or the registry",
		cp.Size, cp.MapRoot[:], rebuilt[:], names(changed))
}

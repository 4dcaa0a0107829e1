package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	"github.com/gpuledger/gpuledger/ledger/policy"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Batch is what Apply appends: envelopes in order, with the acceptance time
// the proposer chose (so every replica records the same time).
type Batch struct {
	// AcceptedAt is the proposer's clock when it sequenced the batch. Required.
	AcceptedAt time.Time
	// Envelopes are serialized gpuledger.v1.Envelope messages in deterministic
	// wire form.
	Envelopes [][]byte
	// AppliedIndex is the caller's replication index (for example the raft
	// log index) of the batch, recorded in the same transaction. 0 keeps the
	// previous value.
	AppliedIndex uint64
}

// Result is the outcome for one envelope of a batch.
type Result struct {
	// Entry is the accepted entry (index, hashes, accepted_at, flags); nil when
	// rejected.
	Entry *pb.Entry
	// Duplicate is true when the envelope was already in the log: Entry is the
	// original one and nothing new was stored.
	Duplicate bool
	// Err is why the envelope was rejected (a *custody.Error), nil when accepted.
	Err error
}

// decoded is one envelope after the parallel phase.
type decoded struct {
	raw    []byte
	hash   [32]byte
	env    *pb.Envelope
	event  *pb.CustodyEvent
	change *pb.RegistryChange
	actor  string
	at     *timestamppb.Timestamp
	// sig[i] is +1 when signature i verified against a key known at the start
	// of the batch, -1 when it did not, 0 when its key was not known then.
	sig []int8
	err *custody.Error
	// For a registry change, set by authorizeChange: the regulators that
	// signed it, and whether add_key's receiving participant signed too.
	signers []string
	consent bool
}

// Apply validates and appends a batch. Envelopes are applied in order, each
// against the state the previous ones left, so a batch may hold a serial's
// whole history. It returns one Result per envelope. A non-nil error means
// nothing of the batch was applied: a storage failure, a cancelled context,
// or a batch over the limits (a *custody.Error with Code TooLarge).
//
// Apply is deterministic: replicas fed the same batches agree on every
// entry, root, serial state and flag.
func (l *Ledger) Apply(ctx context.Context, b Batch) ([]Result, error) {
	if len(b.Envelopes) > l.cfg.MaxBatchEnvelopes {
		return nil, &custody.Error{Code: custody.TooLarge, Reason: custody.ReasonTooLarge,
			Msg: fmt.Sprintf("batch of %d envelopes; at most %d", len(b.Envelopes), l.cfg.MaxBatchEnvelopes)}
	}
	total := 0
	for _, e := range b.Envelopes {
		total += len(e)
	}
	if total > l.cfg.MaxBatchBytes {
		return nil, &custody.Error{Code: custody.TooLarge, Reason: custody.ReasonTooLarge,
			Msg: fmt.Sprintf("batch of %d bytes; at most %d", total, l.cfg.MaxBatchBytes)}
	}
	if b.AcceptedAt.IsZero() {
		return nil, errors.New("apply: batch has no acceptance time")
	}
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v := l.view.Load()
	// The ledger's time never runs backwards. A proposer whose clock is a
	// little behind the last batch's (a new leader) has its batch dated at
	// the last batch's time; one further behind than the policy's clock
	// skew is refused whole, on every replica alike.
	if b.AcceptedAt.Before(v.at) {
		if behind := v.at.Sub(b.AcceptedAt); behind > v.reg.Policy().ClockSkew() {
			return nil, &BatchTimeError{At: b.AcceptedAt, Last: v.at, Skew: v.reg.Policy().ClockSkew()}
		}
		b.AcceptedAt = v.at
	}
	// Decoding and signature verification run on VerifyWorkers goroutines,
	// in envelope order; the sequential phase below takes each envelope as
	// soon as it is ready, so ordering work overlaps verification.
	ds, ready, wait := l.decodeAll(b.Envelopes, v.reg)
	defer wait()

	txn := l.db.NewTransaction(true)
	defer txn.Discard()
	a := &applier{
		l:       l,
		txn:     txn,
		reg:     v.reg,
		size:    v.size,
		at:      b.AcceptedAt,
		hashes:  &hashReader{txn: txn, pending: make(map[int64]tlog.Hash)},
		serials: make(map[string]*pb.SerialState),
		seen:    make(map[[32]byte]*pb.Entry),
	}
	results := make([]Result, len(ds))
	for i := range ds {
		<-ready[i]
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("apply batch: %w", err)
		}
		r, err := a.one(ctx, &ds[i])
		if err != nil {
			return nil, fmt.Errorf("apply batch: entry %d: %w", a.size, err)
		}
		results[i] = r
	}
	if err := a.flush(); err != nil {
		return nil, fmt.Errorf("apply batch: %w", err)
	}
	applied := v.applied
	if b.AppliedIndex != 0 {
		applied = b.AppliedIndex
		if err := txn.Set(metaKey("applied"), be64(applied)); err != nil {
			return nil, fmt.Errorf("apply batch: %w", err)
		}
	}
	if err := txn.Set(metaKey("at"), be64(uint64(b.AcceptedAt.UnixNano()))); err != nil {
		return nil, fmt.Errorf("apply batch: %w", err)
	}
	root := v.root
	if a.size != v.size {
		var err error
		if root, err = tlog.TreeHash(int64(a.size), a.hashes); err != nil {
			return nil, fmt.Errorf("apply batch: tree hash: %w", err)
		}
	}
	// The map's readers see the cache of the store they read (mapMu).
	l.mapMu.Lock()
	err := txn.Commit()
	if err == nil && a.mapStore != nil {
		a.mapStore.commit()
	}
	l.mapMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("apply batch: commit: %w", err)
	}
	nv := &view{size: a.size, root: root, reg: a.reg, applied: applied, at: b.AcceptedAt, mapRoot: v.mapRoot, hasMap: v.hasMap}
	if a.mapStore != nil {
		nv.mapRoot, nv.hasMap = a.mapRoot, true
		l.mapJournaled += a.mapUpdates
	}
	l.view.Store(nv)
	if a.mapStore != nil && l.mapSnapshotDue() {
		// The batch is applied whatever becomes of the snapshot: without
		// it the journal grows, and the next batch tries again.
		if err := l.snapshotMap(); err != nil {
			l.log.WarnContext(ctx, "serial map snapshot", "err", err)
		}
	}
	return results, nil
}

// BatchTimeError is Apply's refusal of a batch dated further before the last
// batch than the clock skew allows: nothing of it is applied, on any replica.
type BatchTimeError struct {
	At, Last time.Time
	Skew     time.Duration
}

func (e *BatchTimeError) Error() string {
	return fmt.Sprintf("batch dated %s, %v before the last batch (%s), more than the clock skew of %v: the proposer's clock is wrong",
		e.At.Format(time.RFC3339Nano), e.Last.Sub(e.At).Round(time.Millisecond), e.Last.Format(time.RFC3339Nano), e.Skew)
}

// applier carries one batch's sequential phase.
type applier struct {
	l         *Ledger
	txn       *badger.Txn
	reg       *Registry
	regCloned bool
	size      uint64
	at        time.Time
	hashes    *hashReader
	serials   map[string]*pb.SerialState // written this batch
	seen      map[[32]byte]*pb.Entry     // accepted this batch
	// regChanges and regLast count the registry changes accepted this
	// batch and name the last one's index, for the serial map.
	regChanges, regLast uint64
	mapStore            *batchMap // the map's writes, once flushed
	mapRoot             smt.Hash  // and its root after them
	mapUpdates          int       // and how many updates it journaled
}

func (a *applier) one(ctx context.Context, d *decoded) (Result, error) {
	if d.err != nil {
		return Result{Err: d.err}, nil
	}
	// Idempotency first: a byte-identical envelope gets its original entry,
	// whatever has changed since (a revoked key, a suspension).
	if e, ok := a.seen[d.hash]; ok {
		return Result{Entry: e, Duplicate: true}, nil
	}
	var st *pb.SerialState
	if d.event != nil {
		var err error
		if st, err = a.serial(d.event.GetSerial()); err != nil {
			return Result{}, err
		}
	}
	if mayBeLogged(d, st) {
		switch orig, err := a.l.entryByHashTxn(a.txn, d.hash[:]); {
		case err == nil:
			return Result{Entry: orig, Duplicate: true}, nil
		case !errors.Is(err, ErrNotFound):
			return Result{}, err
		}
	}
	index := a.size
	if rej := a.authorize(d, index); rej != nil {
		return Result{Err: rej}, nil
	}
	if skew := a.reg.Policy().ClockSkew(); d.at.AsTime().After(a.at.Add(skew)) {
		return Result{Err: custody.Reject(custody.Malformed, custody.ReasonFutureTime,
			"occurred_at %s is more than %v after the ledger's time %s; check the clock or --at",
			d.at.AsTime().Format(time.RFC3339), skew, a.at.UTC().Format(time.RFC3339))}, nil
	}

	var flags []*pb.Flag
	switch {
	case d.event != nil:
		var pol custody.Policy = a.reg.Policy()
		if a.l.cfg.NoDetectors {
			pol = noDetectors{pol}
		}
		next, fl, rej := nextState(a.reg, pol, st, d.event, len(d.raw), d.hash[:], index, a.at)
		if rej != nil {
			return Result{Err: rej}, nil
		}
		flags = fl
		if !a.l.cfg.NoDetectors {
			if err := a.recordFindings(st, next, d.event, index, fl); err != nil {
				return Result{}, err
			}
		}
		if err := a.recordParties(st, next, index); err != nil {
			return Result{}, err
		}
		a.serials[next.GetSerial()] = next
		if err := a.txn.Set(historyKey(next.GetSerial(), next.GetEventCount()-1), be64(index)); err != nil {
			return Result{}, err
		}
	case d.change != nil:
		reg := a.reg
		if !a.regCloned {
			reg = a.reg.clone()
		}
		if rej := reg.applyChange(d.change, index); rej != nil {
			return Result{Err: rej}, nil
		}
		a.reg, a.regCloned = reg, true
		a.regChanges, a.regLast = a.regChanges+1, index
		if err := a.txn.Set(regKey(index), nil); err != nil {
			return Result{}, err
		}
		flags = changeFlags(reg, d)
		if !a.l.cfg.NoDetectors {
			for i, fl := range flags {
				f := gaps.FromChangeFlag(fl, d.change, index, i, reg.Policy().Version())
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
				if err != nil {
					return Result{}, err
				}
				if err := a.txn.Set(findingKey(f, index, i), b); err != nil {
					return Result{}, err
				}
			}
		}
	}
	return a.append(d, index, flags)
}

// budgetAfter refuses an event over the policy's size limits: more
// evidence than max_evidence_bytes, or more bytes than are left of its
// actor's budget on the serial (serial_burst_bytes, refilled at
// serial_bytes_per_window per serial_byte_window of the ledger's time; one
// budget per actor and serial, so that one party's flood never refuses
// another's events). It returns the actor's budget after the event of size
// bytes, accepted at the ledger's time at, to keep in the serial's state.
func budgetAfter(pol *policy.Policy, st *pb.SerialState, ev *pb.CustodyEvent, actor string, size int, at time.Time) (*pb.ByteBudget, *custody.Error) {
	n := 0
	for _, e := range ev.GetEvidence() {
		n += len(e.GetType()) + len(e.GetData())
	}
	if max := pol.MaxEvidenceBytes(); n > max {
		rej := custody.Reject(custody.TooLarge, custody.ReasonEvidenceTooLarge,
			"the event carries %d bytes of evidence; the policy allows %d (max_evidence_bytes): store the rest elsewhere and cite it (a digest and a reference)", n, max)
		rej.Field = "evidence"
		return nil, rej
	}
	burst, rate, window := pol.SerialBurstBytes(), pol.SerialBytesPerWindow(), uint64(pol.SerialByteWindow())
	now := at.UnixNano()
	b := &pb.ByteBudget{Participant: actor, RefilledAtNs: now, BytesLeft: burst} // a budget not used yet is full
	for _, old := range st.GetBudgets() {
		if old.GetParticipant() == actor {
			b = &pb.ByteBudget{Participant: actor, RefilledAtNs: old.GetRefilledAtNs(), BytesLeft: old.GetBytesLeft()}
		}
	}
	if elapsed := now - b.RefilledAtNs; elapsed > 0 { // refill, in integers: every replica alike
		hi, lo := bits.Mul64(uint64(elapsed), rate)
		add := uint64(math.MaxUint64)
		if hi < window {
			add, _ = bits.Div64(hi, lo, window)
		}
		b.BytesLeft = min(burst, b.BytesLeft+min(add, burst))
		b.RefilledAtNs = now
	}
	sz := uint64(size)
	if sz > b.BytesLeft {
		wait := time.Duration(0)
		if rate > 0 {
			hi, lo := bits.Mul64(sz-b.BytesLeft, window)
			if hi < rate {
				q, _ := bits.Div64(hi, lo, rate)
				wait = time.Duration(min(q, math.MaxInt64))
			}
		}
		return nil, custody.Reject(custody.TooLarge, custody.ReasonSerialBudget,
			"%s has %d bytes left of its budget on serial %s and this envelope is %d (the policy: %d bytes, refilled at %d per %v): retry after %s",
			actor, b.BytesLeft, ev.GetSerial(), sz, burst, rate, time.Duration(window), at.Add(wait).UTC().Format(time.RFC3339))
	}
	b.BytesLeft -= sz
	return b, nil
}

// NextState is what Apply makes of a serial's state st (nil before its
// first event) when it accepts the custody event ev, of envelope raw with
// hash (its entry hash), at index and the ledger's time at, under reg: the
// custody rules' next state and flags, with the actor's byte budget. An
// auditor rebuilding the serial map from the log (verify --all) computes
// every state with it, so that its leaves' state digests are the node's.
// A rejection means Apply would have refused the event.
func NextState(reg *Registry, st *pb.SerialState, ev *pb.CustodyEvent, raw, hash []byte, index uint64, at time.Time) (*pb.SerialState, []*pb.Flag, *custody.Error) {
	return nextState(reg, reg.Policy(), st, ev, len(raw), hash, index, at)
}

// nextState is NextState under policy pol (Apply's, which benchmarks may
// strip of detectors), for an envelope of size bytes: the byte budget
// first, then the custody rules.
func nextState(reg *Registry, pol custody.Policy, st *pb.SerialState, ev *pb.CustodyEvent, size int, hash []byte, index uint64, at time.Time) (*pb.SerialState, []*pb.Flag, *custody.Error) {
	budget, rej := budgetAfter(reg.Policy(), st, ev, ev.GetActor(), size, at)
	if rej != nil {
		return nil, nil, rej
	}
	next, flags, rej := custody.Next(custody.Step{State: st, Event: ev, Actor: reg.Participant(ev.GetActor()), Index: index, EntryHash: hash}, reg, pol)
	if rej != nil {
		return nil, nil, rej
	}
	setBudget(next, budget)
	return next, flags, nil
}

// setBudget puts the actor's budget into the serial's state.
func setBudget(st *pb.SerialState, b *pb.ByteBudget) {
	for i, old := range st.GetBudgets() {
		if old.GetParticipant() == b.GetParticipant() {
			st.Budgets[i] = b
			return
		}
	}
	st.Budgets = append(st.Budgets, b)
}

// changeFlags flags a registry change: an add_key that the participant
// receiving the key did not sign (KEY_ADDED_BY_REGULATOR). Regulators may
// add a key to any participant, with their quorum; the finding makes it
// visible that what is signed with that key from now on rests on the
// regulators' word that the key is the participant's.
func changeFlags(reg *Registry, d *decoded) []*pb.Flag {
	ak := d.change.GetAddKey()
	if ak == nil || d.consent {
		return nil
	}
	target := ak.GetParticipantId()
	return []*pb.Flag{{
		Kind: pb.FindingKind_FINDING_KIND_KEY_ADDED_BY_REGULATOR, Severity: pb.Severity_SEVERITY_HIGH,
		Detail: fmt.Sprintf("%s added key %s to %s without %s's signature on the change: whoever holds that key may sign as %s",
			strings.Join(d.signers, " and "), ak.GetKey().GetKeyId(), target, target, target),
		Participants: append([]string{target}, d.signers...),
		Country:      reg.Participant(target).GetCountry(),
	}}
}

// noDetectors is a policy with IMPOSSIBLE_TRAVEL, TRANSSHIPMENT_HUB and
// RAPID_RESALE off (Config.NoDetectors).
type noDetectors struct{ custody.Policy }

func (noDetectors) MaxSpeedKmh() uint32       { return 0 }
func (noDetectors) MaxCustodyChanges() uint32 { return 0 }
func (p noDetectors) Class(c string) pb.CountryClass {
	if k := p.Policy.Class(c); k != pb.CountryClass_COUNTRY_CLASS_WATCH {
		return k
	}
	return pb.CountryClass_COUNTRY_CLASS_UNSPECIFIED
}

// mayBeLogged reports whether the envelope could already be in the log; when
// it cannot, Apply skips the look-up by hash (a store read per entry). An
// event that names the serial's current head as its predecessor is not in the
// log: had it been appended, the head would be it or a later entry. Nor is an
// event of a serial with no entries. Everything else is looked up.
func mayBeLogged(d *decoded, st *pb.SerialState) bool {
	if d.event == nil || st == nil {
		return d.event == nil
	}
	return d.event.GetType() == pb.EventType_EVENT_TYPE_MANUFACTURED || !bytes.Equal(d.event.GetPrevEventHash(), st.GetHeadHash())
}

// append writes an accepted entry and its Merkle hashes.
func (a *applier) append(d *decoded, index uint64, flags []*pb.Flag) (Result, error) {
	hs, err := tlog.StoredHashes(int64(index), leafData(index, a.at.UnixNano(), d.hash), a.hashes)
	if err != nil {
		return Result{}, fmt.Errorf("merkle hashes: %w", err)
	}
	base := tlog.StoredHashIndex(0, int64(index))
	for k, h := range hs {
		a.hashes.pending[base+int64(k)] = h
		if err := a.txn.Set(treeKey(base+int64(k)), bytes.Clone(h[:])); err != nil {
			return Result{}, err
		}
	}
	at := timestamppb.New(a.at)
	stored, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Entry{AcceptedAt: at, Envelope: d.raw, Flags: flags})
	if err != nil {
		return Result{}, err
	}
	if err := a.txn.Set(entryKey(index), stored); err != nil {
		return Result{}, err
	}
	if err := a.txn.Set(hashKey(d.hash[:]), be64(index)); err != nil {
		return Result{}, err
	}
	e := &pb.Entry{Index: index, EntryHash: d.hash[:], LeafHash: bytes.Clone(hs[0][:]), AcceptedAt: at, Flags: flags}
	a.seen[d.hash] = e
	a.size++
	return Result{Entry: e}, nil
}

// flush writes the serial states the batch changed, and their leaves and
// the registry's in the serial map (maps.go).
func (a *applier) flush() error {
	opts := proto.MarshalOptions{Deterministic: true}
	updates := make([]smt.Update, 0, len(a.serials)+1)
	for s, st := range a.serials { // order does not matter: distinct keys, one transaction
		b, err := opts.Marshal(st)
		if err != nil {
			return err
		}
		if err := a.txn.Set(serialKey(s), b); err != nil {
			return err
		}
		updates = append(updates, smt.Update{Key: MapKey(s), Value: SerialLeaf(st.GetHeadHash(), st.GetEventCount(), st.GetLastIndex(), sha256.Sum256(b))})
	}
	if a.regChanges > 0 {
		changes, err := registryChanges(a.txn)
		if err != nil {
			return err
		}
		changes += a.regChanges
		u, err := registryUpdate(a.reg, changes, a.regLast)
		if err != nil {
			return err
		}
		updates = append(updates, u)
		if err := a.txn.Set(metaKey("registry"), be64(changes)); err != nil {
			return err
		}
	}
	if len(updates) > 0 && !a.l.cfg.NoSerialMap {
		a.mapStore, a.mapUpdates = newBatchMap(a.txn, a.l.mapCache, true), len(updates)
		a.mapStore.journal = !a.l.cfg.InMemory
		var err error
		if a.mapRoot, err = updateMap(a.txn, a.mapStore, a.size, updates); err != nil {
			return err
		}
	}
	return a.txn.Set(metaKey("size"), be64(a.size))
}

func (a *applier) serial(s string) (*pb.SerialState, error) {
	if st, ok := a.serials[s]; ok {
		return st, nil
	}
	b, err := getValue(a.txn, serialKey(s))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read serial %q: %w", s, err)
	}
	st := new(pb.SerialState)
	if err := proto.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("decode serial %q: %w", s, err)
	}
	return st, nil
}

// authorize checks the envelope's signatures against the registry as it
// stands at index: every signature must be a valid one by an active key of
// the actor, at least one is needed, and a participant that requires hybrid
// signatures needs one Ed25519 and one ML-DSA-65 signature.
func (a *applier) authorize(d *decoded, index uint64) *custody.Error {
	return a.l.authorizeAt(a.reg, d, index)
}

// authorizeAt is authorize against a given registry; signatures whose result
// d.sig does not hold yet are verified here.
func (l *Ledger) authorizeAt(reg *Registry, d *decoded, index uint64) *custody.Error {
	if d.change != nil {
		return l.authorizeChange(reg, d, index)
	}
	p := reg.Participant(d.actor)
	if p == nil {
		return custody.Reject(custody.Unauthenticated, custody.ReasonUnknownParticipant,
			"%s is not a registered participant", custody.Quote(d.actor))
	}
	var ed, ml bool
	pae := []byte(nil)
	for i, s := range d.env.GetSignatures() {
		k, owner := reg.Key(s.GetKeyid())
		switch {
		case k == nil:
			return custody.Reject(custody.Unauthenticated, custody.ReasonUnknownKey,
				"signature by key %s, which is not registered", s.GetKeyid())
		case owner != d.actor:
			return custody.Reject(custody.Unauthenticated, custody.ReasonWrongSigner,
				"signature by key %s of %s, but the actor is %s", s.GetKeyid(), owner, d.actor)
		case !KeyActive(k, index):
			return custody.Reject(custody.Unauthenticated, custody.ReasonKeyRevoked,
				"key %s of %s may not sign entry %d (active from %d, revoked at %d)", s.GetKeyid(), owner, index, k.GetActiveFromIndex(), k.GetRevokedAtIndex())
		}
		ok := i < len(d.sig) && d.sig[i] > 0
		if i >= len(d.sig) || d.sig[i] == 0 { // a key not known when the batch was decoded
			if pae == nil {
				pae = dsse.PAE(d.env.GetPayloadType(), d.env.GetPayload())
			}
			ok = l.verify(k, pae, s.GetSig())
		}
		if !ok {
			return custody.Reject(custody.Unauthenticated, custody.ReasonBadSignature,
				"the %s signature by key %s does not verify; sign PAE(payload_type, payload) with that key", schemeName(k), s.GetKeyid())
		}
		switch k.GetScheme() {
		case pb.KeyScheme_KEY_SCHEME_ED25519:
			ed = true
		case pb.KeyScheme_KEY_SCHEME_ML_DSA_65:
			ml = true
		}
	}
	if p.GetSuspendedAtIndex() != 0 && index >= p.GetSuspendedAtIndex() {
		return custody.Reject(custody.Forbidden, custody.ReasonSuspended,
			"participant %s is suspended since entry %d", d.actor, p.GetSuspendedAtIndex())
	}
	if p.GetRequireHybrid() && !(ed && ml) {
		return custody.Reject(custody.Unauthenticated, custody.ReasonHybridRequired,
			"%s requires hybrid signatures: sign with both its Ed25519 and its ML-DSA-65 key", d.actor)
	}
	return nil
}

// authorizeChange checks a registry change's signatures: each by an active
// key of a REGULATOR (or, on add_key, of the participant receiving the key,
// as its consent), each signer's signatures verifying and meeting its own
// hybrid requirement, the actor among the signers, no signer suspended, and
// at least the registry's quorum of distinct regulators.
func (l *Ledger) authorizeChange(reg *Registry, d *decoded, index uint64) *custody.Error {
	p := reg.Participant(d.actor)
	switch {
	case p == nil:
		return custody.Reject(custody.Unauthenticated, custody.ReasonUnknownParticipant,
			"%s is not a registered participant", custody.Quote(d.actor))
	case p.GetRole() != pb.Role_ROLE_REGULATOR:
		return custody.Reject(custody.Forbidden, custody.ReasonNotRegulator,
			"%s is not a REGULATOR; only a regulator may change the registry", d.actor)
	}
	target := d.change.GetAddKey().GetParticipantId()
	type schemes struct{ ed, ml bool }
	by := map[string]*schemes{}
	var order []string
	pae := []byte(nil)
	for i, s := range d.env.GetSignatures() {
		k, owner := reg.Key(s.GetKeyid())
		if k == nil {
			return custody.Reject(custody.Unauthenticated, custody.ReasonUnknownKey,
				"signature by key %s, which is not registered", custody.Quote(s.GetKeyid()))
		}
		o := reg.Participant(owner)
		if o.GetRole() != pb.Role_ROLE_REGULATOR && owner != target {
			return custody.Reject(custody.Unauthenticated, custody.ReasonChangeSigner,
				"signature by key %s of %s, which is not a REGULATOR (nor the participant whose key is added): only regulators sign registry changes", s.GetKeyid(), owner)
		}
		if !KeyActive(k, index) {
			return custody.Reject(custody.Unauthenticated, custody.ReasonKeyRevoked,
				"key %s of %s may not sign entry %d (active from %d, revoked at %d)", s.GetKeyid(), owner, index, k.GetActiveFromIndex(), k.GetRevokedAtIndex())
		}
		ok := i < len(d.sig) && d.sig[i] > 0
		if i >= len(d.sig) || d.sig[i] == 0 {
			if pae == nil {
				pae = dsse.PAE(d.env.GetPayloadType(), d.env.GetPayload())
			}
			ok = l.verify(k, pae, s.GetSig())
		}
		if !ok {
			return custody.Reject(custody.Unauthenticated, custody.ReasonBadSignature,
				"the %s signature by key %s of %s does not verify; sign PAE(payload_type, payload) with that key", schemeName(k), s.GetKeyid(), owner)
		}
		if by[owner] == nil {
			by[owner] = &schemes{}
			order = append(order, owner)
		}
		by[owner].ed = by[owner].ed || k.GetScheme() == pb.KeyScheme_KEY_SCHEME_ED25519
		by[owner].ml = by[owner].ml || k.GetScheme() == pb.KeyScheme_KEY_SCHEME_ML_DSA_65
	}
	if by[d.actor] == nil {
		return custody.Reject(custody.Unauthenticated, custody.ReasonWrongSigner,
			"the change's actor %s has not signed it", d.actor)
	}
	d.signers, d.consent = d.signers[:0], false
	for _, owner := range order {
		o := reg.Participant(owner)
		if sa := o.GetSuspendedAtIndex(); sa != 0 && index >= sa {
			return custody.Reject(custody.Forbidden, custody.ReasonSuspended,
				"participant %s is suspended since entry %d", owner, sa)
		}
		if o.GetRequireHybrid() && !(by[owner].ed && by[owner].ml) {
			return custody.Reject(custody.Unauthenticated, custody.ReasonHybridRequired,
				"%s requires hybrid signatures: sign with both its Ed25519 and its ML-DSA-65 key", owner)
		}
		if o.GetRole() == pb.Role_ROLE_REGULATOR {
			d.signers = append(d.signers, owner)
		}
		if owner == target {
			d.consent = true
		}
	}
	if len(d.signers) < reg.Quorum() {
		return custody.Reject(custody.Forbidden, custody.ReasonQuorum,
			"the registry change is signed by %d regulator(s) (%s); this ledger needs %d: have more regulators sign the same payload (gpuledger registry ... --out, then registry cosign)",
			len(d.signers), strings.Join(d.signers, ", "), reg.Quorum())
	}
	return nil
}

// CheckEntry re-verifies a stored entry as Apply judged it; see Checker.
func (l *Ledger) CheckEntry(e *pb.Entry, reg *Registry) error {
	return (*Checker)(l).Check(e, reg)
}

// Checker re-verifies entries outside a store, for auditors: canonical
// envelope and payload for this ledger, and every signature by an active
// key of the actor under a registry. It caches parsed keys and is safe for
// concurrent use.
type Checker Ledger

// NewChecker returns a Checker for the ledger whose genesis file is genesis.
func NewChecker(genesis []byte) *Checker {
	id := sha256.Sum256(genesis)
	return &Checker{ledgerID: id, idHex: hex.EncodeToString(id[:])}
}

// Check returns nil when the entry holds under reg (the registry as of the
// entry's index, or a later one: keys carry the indexes they were active
// between), else the rejection Apply would have given.
func (c *Checker) Check(e *pb.Entry, reg *Registry) error { return c.check(e, reg, false) }

// CheckBound is Check for an entry whose bytes the caller binds to a
// verified Merkle root itself (by recomputing the root over every entry):
// it skips the canonical re-encoding, which that binding makes redundant.
func (c *Checker) CheckBound(e *pb.Entry, reg *Registry) error { return c.check(e, reg, true) }

func (c *Checker) check(e *pb.Entry, reg *Registry, bound bool) error {
	l := (*Ledger)(c)
	var d decoded
	l.decodeWith(&d, e.GetEnvelope(), &Registry{keys: map[string]keyRef{}}, bound)
	if d.err != nil {
		return d.err
	}
	if rej := l.authorizeAt(reg, &d, e.GetIndex()); rej != nil {
		return rej
	}
	return nil
}

// CheckBoundEvent is CheckBound returning, as well, what it decoded: the
// entry hash (SHA-256 of the envelope) and the custody event (nil for a
// registry change, or when the envelope does not decode).
func (c *Checker) CheckBoundEvent(e *pb.Entry, reg *Registry) (*pb.CustodyEvent, [32]byte, error) {
	l := (*Ledger)(c)
	var d decoded
	l.decodeWith(&d, e.GetEnvelope(), &Registry{keys: map[string]keyRef{}}, true)
	if d.err != nil {
		return nil, d.hash, d.err
	}
	if rej := l.authorizeAt(reg, &d, e.GetIndex()); rej != nil {
		return d.event, d.hash, rej
	}
	return d.event, d.hash, nil
}

func schemeName(k *pb.PublicKey) string {
	if s, ok := schemeOf(k.GetScheme()); ok {
		return s.Name()
	}
	return "unknown-scheme"
}

func (l *Ledger) verify(k *pb.PublicKey, msg, sig []byte) bool {
	s, ok := schemeOf(k.GetScheme())
	if !ok {
		return false
	}
	v, err := l.keyCache.VerifierFor(k.GetKeyId(), s, k.GetPublicKey())
	return err == nil && v.Verify(msg, sig)
}

// decodeAll decodes every envelope and verifies its signatures against the
// keys of reg, in parallel on VerifyWorkers goroutines, taking envelopes in
// order. ready[i] is closed when ds[i] is done; wait blocks until every
// worker has returned. The results are a pure function of the inputs.
func (l *Ledger) decodeAll(raws [][]byte, reg *Registry) (ds []decoded, ready []chan struct{}, wait func()) {
	ds = make([]decoded, len(raws))
	ready = make([]chan struct{}, len(raws))
	for i := range ready {
		ready[i] = make(chan struct{})
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(l.cfg.VerifyWorkers, len(raws)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(raws) {
					return
				}
				if d, ok := l.pre.take(raws[i]); ok {
					ds[i] = *d
				} else {
					l.decode(&ds[i], raws[i], reg)
				}
				close(ready[i])
			}
		})
	}
	return ds, ready, wg.Wait
}

// strict drops unknown fields on decode, so that the canonical check below
// (re-encode and compare) also rejects any field this ledger does not know.
var strict = proto.UnmarshalOptions{DiscardUnknown: true}

// Verdict is Preverify's judgement of one envelope.
type Verdict struct {
	// Err is a rejection that holds whatever the registry becomes: the
	// envelope is malformed, over a size limit, unsigned, or carries a
	// signature that does not verify under its (registered) key.
	Err error
	// UnknownKey is set when a signature is by a key the registry does not
	// hold now: Apply rejects the envelope unless a registry change applied
	// before it adds the key.
	UnknownKey error
	// Change is true for a registry change every signature of which
	// verified under a registered key.
	Change bool
}

// Preverify decodes envelopes and verifies their signatures in parallel, and
// keeps the results for a later Apply of the same bytes, so that a caller can
// verify the next batch while the current one commits, and refuse before
// proposing it what Apply would refuse in any case. The verdicts are pure
// functions of the envelope bytes and the key bytes, so Apply's outcome is
// the same with or without Preverify; authorisation (key active, signer is
// the actor, custody rules) is always decided by Apply, in order.
func (l *Ledger) Preverify(envs [][]byte) []Verdict {
	v := l.view.Load()
	ds, ready, wait := l.decodeAll(envs, v.reg)
	wait()
	out := make([]Verdict, len(ds))
	for i := range ds {
		<-ready[i]
		d := &ds[i]
		switch {
		case d.err != nil:
			out[i].Err = d.err
		case slices.Contains(d.sig, -1):
			out[i].Err = custody.Reject(custody.Unauthenticated, custody.ReasonBadSignature, "a signature does not verify; sign PAE(payload_type, payload) with the named key")
		case slices.Contains(d.sig, 0):
			// Apply's own words for it as the registry stands now
			// (an unknown participant, or an unknown key).
			if rej := l.authorizeAt(v.reg, d, v.size); rej != nil {
				out[i].UnknownKey = rej
			}
		default:
			out[i].Change = d.change != nil
		}
		l.pre.put(d)
	}
	return out
}

// preverified holds decode results by entry hash until Apply takes them. It
// is bounded: past maxPreverified results the oldest are dropped (Apply then
// decodes those itself).
type preverified struct {
	n     atomic.Int64 // len(m), read without the lock
	mu    sync.Mutex
	m     map[[32]byte]*decoded
	order [][32]byte
}

const maxPreverified = 1 << 16

func (p *preverified) put(d *decoded) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[[32]byte]*decoded)
	}
	if _, ok := p.m[d.hash]; ok {
		return
	}
	for len(p.order) >= maxPreverified {
		if _, ok := p.m[p.order[0]]; ok {
			delete(p.m, p.order[0])
			p.n.Add(-1)
		}
		p.order = p.order[1:]
	}
	p.m[d.hash] = d
	p.n.Add(1)
	p.order = append(p.order, d.hash)
}

func (p *preverified) take(raw []byte) (*decoded, bool) {
	if p.n.Load() == 0 {
		return nil, false
	}
	h := sha256.Sum256(raw)
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.m[h]
	if ok {
		delete(p.m, h) // order keeps the hash; eviction skips it
		p.n.Add(-1)
	}
	return d, ok
}

func (l *Ledger) decode(d *decoded, raw []byte, reg *Registry) { l.decodeWith(d, raw, reg, false) }

// decodeWith is decode; bound skips the canonical re-encoding (for bytes a
// verified Merkle root binds).
func (l *Ledger) decodeWith(d *decoded, raw []byte, reg *Registry, bound bool) {
	d.raw = raw
	d.hash = sha256.Sum256(raw)
	if max := l.cfg.MaxEnvelopeBytes; max > 0 && len(raw) > max {
		d.err = custody.Reject(custody.TooLarge, custody.ReasonTooLarge,
			"envelope is %d bytes; at most %d", len(raw), max)
		return
	}
	dec := decodeCanonical
	var env *pb.Envelope
	var rej *custody.Error
	if bound {
		dec = decodeBound
		env = new(pb.Envelope)
		if err := strict.Unmarshal(raw, env); err != nil {
			rej = custody.Reject(custody.Malformed, custody.ReasonEnvelopeMalformed, "envelope is not a gpuledger.v1.Envelope: %v", err)
		}
	} else {
		env, rej = DecodeEnvelope(raw)
	}
	if rej != nil {
		d.err = rej
		return
	}
	d.env = env
	switch env.GetPayloadType() {
	case dsse.CustodyEventType:
		ev := new(pb.CustodyEvent)
		if rej := dec(env.GetPayload(), ev, "custody event"); rej != nil {
			d.err = rej
			return
		}
		if rej := custody.ValidateEvent(ev); rej != nil {
			d.err = rej
			return
		}
		if rej := l.forThisLedger(ev.GetLedgerId(), "event"); rej != nil {
			d.err = rej
			return
		}
		d.event, d.actor, d.at = ev, ev.GetActor(), ev.GetOccurredAt()
	case dsse.RegistryChangeType:
		ch := new(pb.RegistryChange)
		if rej := dec(env.GetPayload(), ch, "registry change"); rej != nil {
			d.err = rej
			return
		}
		if !custody.ValidParticipantID(ch.GetActor()) {
			d.err = custody.Reject(custody.Malformed, custody.ReasonInvalidField, "registry change actor %s is not a participant id", custody.Quote(ch.GetActor()))
			return
		}
		if err := ch.GetOccurredAt().CheckValid(); err != nil {
			d.err = custody.Reject(custody.Malformed, custody.ReasonInvalidField, "registry change occurred_at: %v", err)
			return
		}
		if rej := l.forThisLedger(ch.GetLedgerId(), "registry change"); rej != nil {
			d.err = rej
			return
		}
		d.change, d.actor, d.at = ch, ch.GetActor(), ch.GetOccurredAt()
	default:
		d.err = custody.Reject(custody.Malformed, custody.ReasonPayloadType,
			"payload_type %s: want %s or %s", custody.Quote(env.GetPayloadType()), dsse.CustodyEventType, dsse.RegistryChangeType)
		return
	}
	d.sig = make([]int8, len(env.GetSignatures()))
	var pae []byte
	for i, s := range env.GetSignatures() {
		k, _ := reg.Key(s.GetKeyid())
		if k == nil {
			continue
		}
		if pae == nil {
			pae = dsse.PAE(env.GetPayloadType(), env.GetPayload())
		}
		d.sig[i] = -1
		if l.verify(k, pae, s.GetSig()) {
			d.sig[i] = 1
		}
	}
}

// forThisLedger refuses a payload that names another ledger, or none: the
// ledger id inside what is signed is what keeps one ledger's signed events
// and registry changes out of every other that registers the same keys.
func (l *Ledger) forThisLedger(id, what string) *custody.Error {
	if id == l.idHex && id != "" {
		return nil
	}
	var rej *custody.Error
	if id == "" {
		rej = custody.Reject(custody.Malformed, custody.ReasonWrongLedger,
			"the %s names no ledger_id: set it to this ledger's id, %s (gpuledger checkpoint shows it, after gpuledger/)", what, l.idHex)
	} else {
		rej = custody.Reject(custody.Malformed, custody.ReasonWrongLedger,
			"the %s was signed for ledger %s, not this one (%s): it belongs to another ledger and is not valid here", what, custody.Quote(id), l.idHex)
	}
	rej.Field = "ledger_id"
	return rej
}

// DecodeEnvelope parses a stored envelope, insisting on canonical form: no
// unknown fields, deterministic encoding, at least one signature and no key
// signing twice.
func DecodeEnvelope(raw []byte) (*pb.Envelope, *custody.Error) {
	env := new(pb.Envelope)
	if err := strict.Unmarshal(raw, env); err != nil {
		return nil, custody.Reject(custody.Malformed, custody.ReasonEnvelopeMalformed, "envelope is not a gpuledger.v1.Envelope: %v", err)
	}
	if rej := canonical(raw, env, "envelope"); rej != nil {
		return nil, rej
	}
	if len(env.GetSignatures()) == 0 {
		return nil, custody.Reject(custody.Unauthenticated, custody.ReasonNoSignature, "envelope has no signature")
	}
	for i, s := range env.GetSignatures() {
		for _, o := range env.GetSignatures()[:i] {
			if o.GetKeyid() == s.GetKeyid() {
				return nil, custody.Reject(custody.Malformed, custody.ReasonEnvelopeMalformed, "key %s signs twice", s.GetKeyid())
			}
		}
	}
	return env, nil
}

func decodeCanonical(b []byte, m proto.Message, what string) *custody.Error {
	if err := strict.Unmarshal(b, m); err != nil {
		return custody.Reject(custody.Malformed, custody.ReasonPayloadMalformed, "payload is not a %s: %v", what, err)
	}
	return canonical(b, m, what)
}

// decodeBound decodes a payload whose bytes a verified Merkle root already
// binds (see Checker.CheckBound): no canonical re-encoding.
func decodeBound(b []byte, m proto.Message, what string) *custody.Error {
	if err := strict.Unmarshal(b, m); err != nil {
		return custody.Reject(custody.Malformed, custody.ReasonPayloadMalformed, "payload is not a %s: %v", what, err)
	}
	return nil
}

// canonical checks that b is exactly the deterministic encoding of m, which
// was decoded from b with unknown fields dropped: so b has no unknown field
// anywhere and every byte of a stored envelope has one meaning.
func canonical(b []byte, m proto.Message, what string) *custody.Error {
	again, err := dsse.Marshal(m)
	if err != nil || !bytes.Equal(again, b) {
		return custody.Reject(custody.Malformed, custody.ReasonNotCanonical,
			"%s is not canonical: it carries fields this ledger does not know, or is not deterministically serialized", what)
	}
	return nil
}

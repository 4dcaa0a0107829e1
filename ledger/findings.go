package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// Findings storage (see the package doc for the other tables):
//
//	'F' kind uint64be(time s) uint64be(index) ordinal   a stored finding
//	                                   (gpuledger.v1.Finding): every flag, and
//	                                   time-based findings a later entry
//	                                   resolved; ordered by when they arose,
//	                                   so a query as of T stops at T
//	'G' serial 0x00 uint64be(index) ordinal   the 'F' key: a serial's stored findings
//	'H' uint64be(shipped_at s) serial  uint64be(shipped index): open shipments
//	'S' class uint64be(last event s) serial   uint64be(last index): silence clocks
//
// Time-based findings are due when a window has run out at the query's
// as_of instant, to the second: HANDOFF_UNCONFIRMED when as_of is later than
// shipped_at + handoff_window, SILENT when it is later than custody_at (the
// last event by a party with standing) + the silence window of the serial's
// state. Event time decides throughout: a finding arises at its time and is
// resolved at the resolving event's occurred_at, and a query as of T sees
// each finding as it stood at T (see gaps.AsOf).

func findingKey(f *pb.Finding, index uint64, ordinal int) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'F', byte(f.GetKind())}, uint64(max(f.GetTime().GetSeconds(), 0)))
	b = binary.BigEndian.AppendUint64(b, index)
	return append(b, byte(ordinal))
}

func serialFindingKey(serial string, index uint64, ordinal int) []byte {
	b := binary.BigEndian.AppendUint64(append(append([]byte{'G'}, serial...), 0), index)
	return append(b, byte(ordinal))
}

func handoffKey(shippedAt int64, serial string) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{'H'}, uint64(shippedAt)), serial...)
}

func silenceKey(class byte, last int64, serial string) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{'S', class}, uint64(last)), serial...)
}

func (r *Registry) windows() gaps.Windows { return gaps.WindowsOf(r.Policy()) }

// recordFindings writes what an accepted event changes in the findings
// tables: its flags as findings, the open-shipment and silence clocks, and
// the resolved findings of a late receipt or a broken silence. A finding is
// resolved at the resolving event's occurred_at (event time decides, as it
// does for when a finding arises).
func (a *applier) recordFindings(st, next *pb.SerialState, ev *pb.CustodyEvent, index uint64, flags []*pb.Flag) error {
	pol := a.reg.Policy()
	w := a.reg.windows()
	serial := ev.GetSerial()
	put := func(f *pb.Finding, idx uint64, ordinal int) error {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
		if err != nil {
			return err
		}
		key := findingKey(f, idx, ordinal)
		if err := a.txn.Set(key, b); err != nil {
			return err
		}
		return a.txn.Set(serialFindingKey(serial, idx, ordinal), key)
	}
	resolve := func(f *pb.Finding) {
		f.Resolved, f.ResolvedByIndex, f.ResolvedAt = true, index, ev.GetOccurredAt()
		f.EvidenceIndexes = append(f.EvidenceIndexes, index)
	}
	for i, fl := range flags {
		if err := put(gaps.FromFlag(fl, ev, index, i, pol.Version()), index, i); err != nil {
			return err
		}
	}
	at := ev.GetOccurredAt().GetSeconds()

	// Open shipments.
	prevShip, nextShip := st.GetOpenShipment(), next.GetOpenShipment()
	if prevShip != nil && nextShip.GetShippedIndex() != prevShip.GetShippedIndex() {
		if err := a.txn.Delete(handoffKey(prevShip.GetShippedAt().GetSeconds(), serial)); err != nil {
			return err
		}
		if at > gaps.HandoffDue(prevShip, w) {
			f := gaps.Handoff(st, prevShip, w, pol.Version())
			resolve(f)
			if err := put(f, prevShip.GetShippedIndex(), 0); err != nil {
				return err
			}
		}
	}
	if nextShip != nil && nextShip.GetShippedIndex() != prevShip.GetShippedIndex() {
		if err := a.txn.Set(handoffKey(nextShip.GetShippedAt().GetSeconds(), serial), be64(nextShip.GetShippedIndex())); err != nil {
			return err
		}
	}

	// Silence clocks: one per serial, by state class and the time the
	// parties with standing last spoke. Events by others leave it alone.
	pc, nc := gaps.SilenceClass(st), gaps.SilenceClass(next)
	if pc == nc && st.GetCustodyIndex() == next.GetCustodyIndex() {
		return nil
	}
	if pc != 0 {
		last := st.GetCustodyAt().GetSeconds()
		if err := a.txn.Delete(silenceKey(pc, last, serial)); err != nil {
			return err
		}
		if at > gaps.SilenceDue(last, pc, w) {
			f := gaps.Silent(st, pc, w, pol.Version())
			resolve(f)
			if err := put(f, st.GetCustodyIndex(), 0); err != nil {
				return err
			}
		}
	}
	if nc != 0 {
		if err := a.txn.Set(silenceKey(nc, next.GetCustodyAt().GetSeconds(), serial), be64(next.GetCustodyIndex())); err != nil {
			return err
		}
	}
	return nil
}

// FindingQuery selects findings.
type FindingQuery struct {
	gaps.Filter
	// AsOf is the instant time-based findings are judged at; stored findings
	// later than it are left out.
	AsOf time.Time
	// After is the Next of a previous page, or empty.
	After []byte
	// Limit caps the page (at least 1).
	Limit int
	// MaxScan, if positive, bounds the index entries examined: a page ends
	// after that many, full or not (even empty), with the position to go on
	// from, so that a query that matches little costs bounded work a call.
	MaxScan int
}

// sources, in listing order within a kind.
const (
	srcStored byte = iota + 1
	srcHandoff
	srcSilentInstalled
	srcSilentOther
)

// Findings returns a page of findings matching q, ordered by kind, then
// stored findings by when they arose (then entry index), then due time-based
// ones by event time, and the position to continue from (nil when there are
// no more).
func (l *Ledger) Findings(ctx context.Context, q FindingQuery) ([]*pb.Finding, []byte, error) {
	if q.Limit <= 0 {
		return nil, nil, fmt.Errorf("limit %d: %w", q.Limit, ErrInvalidArgument)
	}
	kinds := slices.Clone(q.Kinds)
	if len(kinds) == 0 {
		for k := range pb.FindingKind_name {
			if k != 0 {
				kinds = append(kinds, pb.FindingKind(k))
			}
		}
	}
	slices.Sort(kinds)
	kinds = slices.Compact(kinds)
	reg := l.Registry()
	w, version := reg.windows(), reg.Policy().Version()
	asOf := q.AsOf.Unix()
	var out []*pb.Finding
	var next []byte
	scanned := 0
	err := l.db.View(func(txn *badger.Txn) error {
		for _, k := range kinds {
			srcs := []byte{srcStored}
			switch k {
			case pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED:
				srcs = append(srcs, srcHandoff)
			case pb.FindingKind_FINDING_KIND_SILENT:
				srcs = append(srcs, srcSilentInstalled, srcSilentOther)
			}
			for _, src := range srcs {
				pos := []byte{byte(k), src}
				if len(q.After) >= 2 && bytes.Compare(pos, q.After[:2]) < 0 {
					continue
				}
				var after []byte
				if len(q.After) >= 2 && bytes.Equal(pos, q.After[:2]) {
					after = q.After[2:]
				}
				full, err := l.scanFindings(ctx, txn, k, src, after, q, w, version, asOf, &out, &scanned, func(key []byte) {
					next = append(pos, key...)
				})
				if err != nil || full {
					return err
				}
			}
		}
		next = nil
		return nil
	})
	return out, next, err
}

// scanFindings appends one source's matching findings to out until the page
// is full; it reports whether it filled the page, calling mark with the key
// to continue after.
func (l *Ledger) scanFindings(ctx context.Context, txn *badger.Txn, k pb.FindingKind, src byte, after []byte, q FindingQuery,
	w gaps.Windows, version uint64, asOf int64, out *[]*pb.Finding, scanned *int, mark func([]byte)) (bool, error) {
	var prefix []byte
	var class byte
	switch src {
	case srcStored:
		prefix = []byte{'F', byte(k)}
	case srcHandoff:
		prefix = []byte{'H'}
	case srcSilentInstalled, srcSilentOther:
		class = 1
		if src == srcSilentOther {
			class = 2
		}
		prefix = []byte{'S', class}
	}
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = src == srcStored
	it := txn.NewIterator(opts)
	defer it.Close()
	seek := prefix
	if after != nil {
		seek = append(slices.Clone(prefix), after...)
	}
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		key := it.Item().Key()
		if after != nil && bytes.Equal(key[len(prefix):], after) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if *scanned++; q.MaxScan > 0 && *scanned > q.MaxScan {
			return true, nil // bounded work: the caller goes on after the last key marked
		}
		consumed := func() { mark(slices.Clone(key[len(prefix):])) } // a later page starts after it
		var f *pb.Finding
		switch src {
		case srcStored:
			f = new(pb.Finding)
			if int64(binary.BigEndian.Uint64(key[2:10])) > asOf {
				return false, nil // the rest arose later
			}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, f) }); err != nil {
				return false, err
			}
			if f = gaps.AsOf(f, asOf); f == nil {
				consumed()
				continue
			}
		case srcHandoff:
			shipped := int64(binary.BigEndian.Uint64(key[1:9]))
			if shipped+int64(w.Handoff/time.Second) >= asOf {
				return false, nil // the rest are due later
			}
			st, err := l.serialTxn(txn, string(key[9:]))
			if err != nil {
				return false, err
			}
			f = gaps.Handoff(st, st.GetOpenShipment(), w, version)
		default:
			last := int64(binary.BigEndian.Uint64(key[2:10]))
			if gaps.SilenceDue(last, class, w) >= asOf {
				return false, nil
			}
			st, err := l.serialTxn(txn, string(key[10:]))
			if err != nil {
				return false, err
			}
			f = gaps.Silent(st, class, w, version)
		}
		if !q.Match(f) || (q.Country != "" && f.GetCountry() != q.Country) {
			consumed()
			continue
		}
		if len(*out) == q.Limit {
			return true, nil
		}
		*out = append(*out, f)
		consumed()
	}
	return false, nil
}

func (l *Ledger) serialTxn(txn *badger.Txn, serial string) (*pb.SerialState, error) {
	b, err := getValue(txn, serialKey(serial))
	if err != nil {
		return nil, fmt.Errorf("serial %q of a findings index: %w", serial, err)
	}
	st := new(pb.SerialState)
	return st, proto.Unmarshal(b, st)
}

// SerialFindings returns a serial's findings as of asOf: stored ones (the
// resolved too, when asked) and the time-based ones due.
func (l *Ledger) SerialFindings(ctx context.Context, serial string, asOf time.Time, includeResolved bool) ([]*pb.Finding, error) {
	reg := l.Registry()
	w, version := reg.windows(), reg.Policy().Version()
	var out []*pb.Finding
	err := l.db.View(func(txn *badger.Txn) error {
		prefix := append(append([]byte{'G'}, serial...), 0)
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
			key := it.Item().Key()
			var fkey []byte
			if err := it.Item().Value(func(v []byte) error { fkey = slices.Clone(v); return nil }); err != nil {
				return err
			}
			b, err := getValue(txn, fkey)
			if err != nil {
				return fmt.Errorf("finding %x of serial %q: %w", key, serial, err)
			}
			f := new(pb.Finding)
			if err := proto.Unmarshal(b, f); err != nil {
				return err
			}
			if f = gaps.AsOf(f, asOf.Unix()); f != nil && (!f.GetResolved() || includeResolved) {
				out = append(out, f)
			}
		}
		st, err := l.serialTxn(txn, serial)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, gaps.Due(st, asOf, w, version)...)
		return nil
	})
	return out, err
}

// DueBetween returns the time-based findings present as of to but not as of
// from (a finding with event time t and window w is present as of T when
// t + w < T): the open shipments and silences whose window ran out between
// the two. Consecutive calls with from = the previous to see each finding
// once. It reads only the part of each index that can hold them.
func (l *Ledger) DueBetween(ctx context.Context, from, to time.Time) ([]*pb.Finding, error) {
	reg := l.Registry()
	w, version := reg.windows(), reg.Policy().Version()
	var out []*pb.Finding
	err := l.db.View(func(txn *badger.Txn) error {
		scan := func(prefix []byte, window time.Duration, build func(st *pb.SerialState) *pb.Finding) error {
			lo := from.Unix() - int64(window/time.Second) // t + w >= from: not present before
			hi := to.Unix() - int64(window/time.Second)   // t + w < to: present now
			opts := badger.DefaultIteratorOptions
			opts.Prefix = prefix
			it := txn.NewIterator(opts)
			defer it.Close()
			for it.Seek(binary.BigEndian.AppendUint64(slices.Clone(prefix), uint64(max(lo, 0)))); it.ValidForPrefix(prefix); it.Next() {
				key := it.Item().Key()
				t := int64(binary.BigEndian.Uint64(key[len(prefix):]))
				if t < lo {
					continue
				}
				if t >= hi {
					return nil
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				st, err := l.serialTxn(txn, string(key[len(prefix)+8:]))
				if err != nil {
					return err
				}
				out = append(out, build(st))
			}
			return nil
		}
		if err := scan([]byte{'H'}, w.Handoff, func(st *pb.SerialState) *pb.Finding {
			return gaps.Handoff(st, st.GetOpenShipment(), w, version)
		}); err != nil {
			return err
		}
		for _, class := range []byte{1, 2} {
			if err := scan([]byte{'S', class}, w.Window(class), func(st *pb.SerialState) *pb.Finding {
				return gaps.Silent(st, class, w, version)
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// EntryFindings returns the findings stored for an entry's flags: the same
// findings ListFindings gives, for streaming them as entries are applied.
func (l *Ledger) EntryFindings(ctx context.Context, e *pb.Entry) ([]*pb.Finding, error) {
	if len(e.GetFlags()) == 0 {
		return nil, nil
	}
	env, rej := DecodeEnvelope(e.GetEnvelope())
	ev := new(pb.CustodyEvent)
	if rej != nil || UnmarshalPayload(env, ev) != nil {
		return nil, fmt.Errorf("entry %d carries flags but no custody event", e.GetIndex())
	}
	var out []*pb.Finding
	err := l.db.View(func(txn *badger.Txn) error {
		for i := range e.GetFlags() {
			fkey, err := getValue(txn, serialFindingKey(ev.GetSerial(), e.GetIndex(), i))
			if err != nil {
				return fmt.Errorf("finding %d of entry %d: %w", i, e.GetIndex(), err)
			}
			b, err := getValue(txn, fkey)
			if err != nil {
				return fmt.Errorf("finding %d of entry %d: %w", i, e.GetIndex(), err)
			}
			f := new(pb.Finding)
			if err := proto.Unmarshal(b, f); err != nil {
				return err
			}
			out = append(out, f)
		}
		return nil
	})
	return out, err
}

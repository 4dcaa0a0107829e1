package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// loadEntry reads entry index. With decode, it also fills the decoded payload
// and the signer key ids.
func loadEntry(txn *badger.Txn, index uint64, decode bool) (*pb.Entry, error) {
	b, err := getValue(txn, entryKey(index))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("entry %d: %w", index, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read entry %d: %w", index, err)
	}
	return storedEntry(index, b, decode)
}

// storedEntry decodes entry index from its stored bytes b (decoding copies
// what it keeps of them) and fills its hashes, and with decode the fields
// decoded from the envelope (DecodeEntry).
func storedEntry(index uint64, b []byte, decode bool) (*pb.Entry, error) {
	e := new(pb.Entry)
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("decode stored entry %d: %w", index, err)
	}
	e.Index = index
	h := sha256.Sum256(e.GetEnvelope())
	e.EntryHash = h[:]
	lh := LeafHash(index, e.GetAcceptedAt().AsTime().UnixNano(), h)
	e.LeafHash = lh[:]
	if decode {
		DecodeEntry(e)
	}
	return e, nil
}

// DecodeEntry fills an entry's output-only fields (the decoded event or
// registry change and the signer key ids) from its envelope bytes. Entries
// whose envelope does not decode are left as they are.
func DecodeEntry(e *pb.Entry) {
	env := new(pb.Envelope)
	if proto.Unmarshal(e.GetEnvelope(), env) != nil {
		return
	}
	e.SignerKeyIds = e.SignerKeyIds[:0]
	for _, s := range env.GetSignatures() {
		e.SignerKeyIds = append(e.SignerKeyIds, s.GetKeyid())
	}
	switch env.GetPayloadType() {
	case dsse.CustodyEventType:
		ev := new(pb.CustodyEvent)
		if proto.Unmarshal(env.GetPayload(), ev) == nil {
			e.Event = ev
		}
	case dsse.RegistryChangeType:
		ch := new(pb.RegistryChange)
		if proto.Unmarshal(env.GetPayload(), ch) == nil {
			e.RegistryChange = ch
		}
	}
}

// Entry returns the entry at index, decoded.
func (l *Ledger) Entry(ctx context.Context, index uint64) (*pb.Entry, error) {
	if index >= l.Size() {
		return nil, fmt.Errorf("entry %d: %w (the log has %d entries)", index, ErrNotFound, l.Size())
	}
	var e *pb.Entry
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		e, err = loadEntry(txn, index, true)
		return err
	})
	return e, err
}

// EntryByHash returns the entry whose envelope hashes to h, decoded.
func (l *Ledger) EntryByHash(ctx context.Context, h []byte) (*pb.Entry, error) {
	var e *pb.Entry
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		if e, err = l.entryByHashTxn(txn, h); err == nil {
			DecodeEntry(e)
		}
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("entry %x: %w", h, ErrNotFound)
		}
		return err
	})
	if err == nil && e.GetIndex() >= l.Size() {
		return nil, fmt.Errorf("entry %x: %w", h, ErrNotFound)
	}
	return e, err
}

func (l *Ledger) entryByHashTxn(txn *badger.Txn, h []byte) (*pb.Entry, error) {
	if len(h) != sha256.Size {
		return nil, fmt.Errorf("entry hash is %d bytes, want 32: %w", len(h), ErrInvalidArgument)
	}
	b, err := getValue(txn, hashKey(h))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read hash index: %w", err)
	}
	return loadEntry(txn, binary.BigEndian.Uint64(b), false)
}

// Entries calls fn for each entry in [start, end), in order, decoded, until fn
// returns an error. end is capped at the log's size.
func (l *Ledger) Entries(ctx context.Context, start, end uint64, fn func(*pb.Entry) error) error {
	return l.EntriesStored(ctx, start, end, func(i uint64, stored []byte) error {
		e, err := storedEntry(i, stored, true) // decoding copies the bytes it keeps
		if err != nil {
			return err
		}
		return fn(e)
	})
}

// EntriesStored calls fn for each entry in [start, end), in order, with its
// stored bytes: a serialized gpuledger.v1.Entry holding accepted_at, the
// envelope and the flags, without the index (the key's) or anything derived
// from the envelope. stored is valid only until fn returns. For readers that
// pass the entries on as they are (StreamEntries' envelopes_only) instead
// of decoding and encoding each again.
func (l *Ledger) EntriesStored(ctx context.Context, start, end uint64, fn func(index uint64, stored []byte) error) error {
	end = min(end, l.Size())
	const chunk = 256 // bound the time one read transaction stays open
	var buf []byte
	var ends []int
	for start < end {
		stop := min(end, start+chunk)
		buf, ends = buf[:0], ends[:0]
		// One ordered scan of the entry keys: a point look-up per entry
		// (bloom filters, each level's tables, the block found again for
		// every key) cost a reader of the whole log more than the scan.
		if err := l.db.View(func(txn *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.Prefix = []byte{'e'}
			opts.PrefetchValues = false // most are in the tree; the rest are read in order
			it := txn.NewIterator(opts)
			defer it.Close()
			it.Seek(entryKey(start))
			for i := start; i < stop; i++ {
				if !it.ValidForPrefix(opts.Prefix) || len(it.Item().Key()) != 9 || binary.BigEndian.Uint64(it.Item().Key()[1:]) != i {
					return fmt.Errorf("entry %d: %w", i, ErrNotFound)
				}
				err := it.Item().Value(func(b []byte) error {
					buf = append(buf, b...)
					return nil
				})
				if err != nil {
					return fmt.Errorf("read entry %d: %w", i, err)
				}
				ends = append(ends, len(buf))
				it.Next()
			}
			return nil
		}); err != nil {
			return err
		}
		from := 0
		for k, to := range ends {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(start+uint64(k), buf[from:to:to]); err != nil {
				return err
			}
			from = to
		}
		start = stop
	}
	return nil
}

// Serial returns a serial's current state.
func (l *Ledger) Serial(ctx context.Context, serial string) (*pb.SerialState, error) {
	var st *pb.SerialState
	err := l.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, serialKey(serial))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("serial %q: %w", serial, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read serial %q: %w", serial, err)
		}
		st = new(pb.SerialState)
		return proto.Unmarshal(b, st)
	})
	return st, err
}

// SerialHistory returns up to limit entries of a serial, oldest first,
// starting at its from-th entry (0 is MANUFACTURED), decoded, and the
// position to continue from (0 when there are no more).
func (l *Ledger) SerialHistory(ctx context.Context, serial string, from uint64, limit int) ([]*pb.Entry, uint64, error) {
	return l.SerialHistoryPage(ctx, serial, from, limit, 0)
}

// SerialHistoryPage is SerialHistory with a page bounded in bytes as well:
// it stops before an entry that would take the page's encoded size past
// maxBytes (0: no bound), but always returns at least one entry.
func (l *Ledger) SerialHistoryPage(ctx context.Context, serial string, from uint64, limit, maxBytes int) ([]*pb.Entry, uint64, error) {
	if limit <= 0 {
		return nil, 0, fmt.Errorf("limit %d: %w", limit, ErrInvalidArgument)
	}
	var out []*pb.Entry
	var next uint64
	bytes := 0
	err := l.db.View(func(txn *badger.Txn) error {
		prefix := historyPrefix(serial)
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(historyKey(serial, from)); it.ValidForPrefix(prefix); it.Next() {
			if len(out) == limit {
				next = binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])
				return nil
			}
			var idx uint64
			if err := it.Item().Value(func(v []byte) error { idx = binary.BigEndian.Uint64(v); return nil }); err != nil {
				return err
			}
			e, err := loadEntry(txn, idx, true)
			if err != nil {
				return err
			}
			size := proto.Size(e)
			if maxBytes > 0 && len(out) > 0 && bytes+size > maxBytes {
				next = binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])
				return nil
			}
			bytes += size
			out = append(out, e)
		}
		return nil
	})
	if err == nil && len(out) == 0 && from == 0 {
		return nil, 0, fmt.Errorf("serial %q: %w", serial, ErrNotFound)
	}
	return out, next, err
}

// SerialFilter selects serials; zero fields match all.
type SerialFilter struct {
	Custodian string
	State     pb.CustodyState
	Country   string
	Model     string
	// Party, when set, keeps only the serials this participant has been
	// party to (see PartyOf), and walks those alone.
	Party string
}

func (f SerialFilter) match(st *pb.SerialState) bool {
	return (f.Custodian == "" || st.GetCustodian() == f.Custodian) &&
		(f.State == pb.CustodyState_CUSTODY_STATE_UNSPECIFIED || st.GetState() == f.State) &&
		(f.Country == "" || st.GetLocation().GetCountry() == f.Country) &&
		(f.Model == "" || st.GetModel() == f.Model)
}

// Serials returns up to limit serials matching f in serial order, starting
// after the serial named by after, and the serial to continue after ("" when
// there are no more). With maxScan > 0 it examines at most that many
// serials: a filter that matches little returns a short (even empty) page
// and where to go on, after bounded work.
func (l *Ledger) Serials(ctx context.Context, f SerialFilter, after string, limit, maxScan int) ([]*pb.SerialState, string, error) {
	var out []*pb.SerialState
	next := ""
	if f.Party != "" {
		err := l.db.View(func(txn *badger.Txn) error {
			scanned, last := 0, ""
			return partySerials(txn, f.Party, after, func(serial string) (bool, error) {
				if err := ctx.Err(); err != nil {
					return false, err
				}
				if scanned++; maxScan > 0 && scanned > maxScan {
					next = last
					return false, nil
				}
				b, err := getValue(txn, serialKey(serial))
				if err != nil {
					return false, fmt.Errorf("read serial %q: %w", serial, err)
				}
				st := new(pb.SerialState)
				if err := proto.Unmarshal(b, st); err != nil {
					return false, err
				}
				if f.match(st) {
					if len(out) == limit {
						next = last
						return false, nil
					}
					out = append(out, st)
				}
				last = serial
				return true, nil
			})
		})
		return out, next, err
	}
	err := l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{'s'}
		it := txn.NewIterator(opts)
		defer it.Close()
		start := serialKey(after)
		scanned, last := 0, ""
		for it.Seek(start); it.ValidForPrefix(opts.Prefix); it.Next() {
			if after != "" && bytes.Equal(it.Item().Key(), start) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if scanned++; maxScan > 0 && scanned > maxScan {
				next = last // bounded work: go on after the last serial examined
				return nil
			}
			st := new(pb.SerialState)
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, st) }); err != nil {
				return err
			}
			if !f.match(st) {
				last = st.GetSerial()
				continue
			}
			if len(out) == limit {
				next = last
				return nil
			}
			out = append(out, st)
			last = st.GetSerial()
		}
		return nil
	})
	return out, next, err
}

// RegistryAt returns the registry that applied to the entry at index: the
// genesis registry with every registry change before index.
func (l *Ledger) RegistryAt(ctx context.Context, index uint64) (*Registry, error) {
	g, err := ParseGenesis(l.genesis)
	if err != nil {
		return nil, err
	}
	reg, err := newRegistry(g)
	if err != nil {
		return nil, err
	}
	return l.replayRegistry(ctx, reg, min(index, l.Size()))
}

// replayRegistry applies the registry changes of entries [0, upTo) to reg.
func (l *Ledger) replayRegistry(ctx context.Context, reg *Registry, upTo uint64) (*Registry, error) {
	reg = reg.clone()
	err := l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{'r'}
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
			idx := binary.BigEndian.Uint64(it.Item().Key()[1:])
			if idx >= upTo {
				break
			}
			e, err := loadEntry(txn, idx, true)
			if err != nil {
				return err
			}
			if e.GetRegistryChange() == nil {
				return fmt.Errorf("entry %d is marked as a registry change but holds none", idx)
			}
			if rej := reg.applyChange(e.GetRegistryChange(), idx); rej != nil {
				return fmt.Errorf("replay registry change %d: %w", idx, rej)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return reg, nil
}

// RegistryEntries returns up to limit registry-change entries with index at
// least from, in log order, decoded, and the index to continue from (0 when
// there are no more).
func (l *Ledger) RegistryEntries(ctx context.Context, from uint64, limit int) ([]*pb.Entry, uint64, error) {
	var out []*pb.Entry
	var next uint64
	size := l.Size()
	err := l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = []byte{'r'}, false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(regKey(from)); it.ValidForPrefix(opts.Prefix); it.Next() {
			idx := binary.BigEndian.Uint64(it.Item().Key()[1:])
			if idx >= size {
				return nil
			}
			if len(out) == limit {
				next = idx
				return nil
			}
			e, err := loadEntry(txn, idx, true)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, next, err
}

// UnmarshalPayload decodes an envelope's payload into m (a CustodyEvent or a
// RegistryChange), checking the payload type and canonical form.
func UnmarshalPayload(env *pb.Envelope, m proto.Message) error {
	want := dsse.CustodyEventType
	if _, ok := m.(*pb.RegistryChange); ok {
		want = dsse.RegistryChangeType
	}
	if env.GetPayloadType() != want {
		return fmt.Errorf("payload type %s, want %q", custody.Quote(env.GetPayloadType()), want)
	}
	if rej := decodeCanonical(env.GetPayload(), m, "payload"); rej != nil {
		return rej
	}
	return nil
}

package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
)

// The party index records, for each participant and serial, the entry from
// which the participant has been party to the serial: the first entry after
// which it held the GPU (custodian), had shipped it, or was the consignee of
// its open shipment. It is what a node with --read-scope scoped serves a
// participant: that serial's entries from then on, never those before.
//
// Only the custody record decides it, never an event's actor alone: a
// participant that files a receipt it has no standing for (a rival claim), or
// names itself anywhere in an event, gains nothing to read by it, so that
// suspicious evidence cannot be used to watch someone else's GPU.
//
// Key: 'p' participant 0x00 serial. Value: uint64be(log index) and
// uint64be(the serial's event position at that entry, from 0).
func partyPrefix(p string) []byte { return append(append([]byte{'p'}, p...), 0) }

func partyKey(p, serial string) []byte { return append(partyPrefix(p), serial...) }

// parties are the participants with standing on a serial in a state: its
// custodian and, while a shipment is open, the shipper and the consignee.
func parties(st *pb.SerialState) []string {
	if st == nil {
		return nil
	}
	out := []string{st.GetCustodian()}
	if sh := st.GetOpenShipment(); sh != nil {
		out = append(out, sh.GetShipper(), sh.GetConsignee())
	}
	return out
}

// recordParties adds to the party index whoever has standing after the
// entry at index and had none before it.
func (a *applier) recordParties(before, after *pb.SerialState, index uint64) error {
	had := parties(before)
	for _, p := range parties(after) {
		if p == "" || contains(had, p) {
			continue
		}
		had = append(had, p)
		k := partyKey(p, after.GetSerial())
		switch _, err := a.txn.Get(k); {
		case err == nil:
			continue // party since an earlier entry
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		v := binary.BigEndian.AppendUint64(be64(index), after.GetEventCount()-1)
		if err := a.txn.Set(k, v); err != nil {
			return err
		}
	}
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Party says from which entry a participant has been party to a serial.
type Party struct {
	// Index is the log index of that entry; Position its place in the
	// serial's history (0 is MANUFACTURED).
	Index, Position uint64
}

// PartyOf returns from when participant p has been party to serial, or
// ErrNotFound when it never has (or the serial does not exist).
func (l *Ledger) PartyOf(ctx context.Context, p, serial string) (Party, error) {
	var out Party
	err := l.db.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, partyKey(p, serial))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%s has not been party to serial %q: %w", p, serial, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if len(v) != 16 {
			return fmt.Errorf("%w: party index of %s on %q is %d bytes", ErrCorrupt, p, serial, len(v))
		}
		out = Party{Index: binary.BigEndian.Uint64(v), Position: binary.BigEndian.Uint64(v[8:])}
		return nil
	})
	return out, err
}

// partySerials walks the serials participant p has been party to, in
// serial order, after the serial named by after.
func partySerials(txn *badger.Txn, p, after string, fn func(serial string) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix, opts.PrefetchValues = partyPrefix(p), false
	it := txn.NewIterator(opts)
	defer it.Close()
	start := partyKey(p, after)
	for it.Seek(start); it.ValidForPrefix(opts.Prefix); it.Next() {
		k := it.Item().Key()
		if after != "" && bytes.Equal(k, start) {
			continue
		}
		more, err := fn(string(k[len(opts.Prefix):]))
		if err != nil || !more {
			return err
		}
	}
	return nil
}

package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// The serial map is a sparse Merkle tree (package smt) that Apply keeps in
// the same transaction as the log: one leaf per serial, keyed by MapKey,
// whose value commits to the serial's head entry hash, event count, head
// index and stored state; and one leaf for the registry, keyed by
// RegistryMapKey, committing to the number of registry changes, the index
// of the last and the registry's state. Its root after each batch is kept
// by log size, so that a checkpoint of any size names the map of that size.
//
// Keys: 'n' and a node's position (smt.Position.Bytes) for the tree's
// nodes; 'N' and uint64be(log size) for the root at that size.

// Domain separation of the map's keys and values.
const (
	mapSerialTag   = "gpuledger-map-serial-v1\x00"
	mapRegistryTag = "gpuledger-map-registry-v1"
	mapLeafTag     = "gpuledger-map-leaf-v1\x00"
	mapRegLeafTag  = "gpuledger-map-registry-leaf-v1\x00"
)

// MapKey is the map key of a serial: SHA-256 of a tag and the serial.
func MapKey(serial string) smt.Hash { return sha256.Sum256([]byte(mapSerialTag + serial)) }

// RegistryMapKey is the map key of the registry.
var RegistryMapKey = smt.Hash(sha256.Sum256([]byte(mapRegistryTag)))

// SerialLeaf is a serial's map value:
//
//	SHA-256("gpuledger-map-leaf-v1\x00" || head entry hash (32) ||
//	        uint64be(event count) || uint64be(head index) || state digest (32))
//
// where the state digest is the SHA-256 of the serial's stored state (its
// deterministic protobuf form, without output-only fields).
func SerialLeaf(head []byte, count, headIndex uint64, stateDigest [32]byte) smt.Hash {
	b := make([]byte, 0, len(mapLeafTag)+32+16+32)
	b = append(b, mapLeafTag...)
	b = append(b, head...)
	b = binary.BigEndian.AppendUint64(b, count)
	b = binary.BigEndian.AppendUint64(b, headIndex)
	b = append(b, stateDigest[:]...)
	return sha256.Sum256(b)
}

// RegistryLeaf is the registry's map value:
//
//	SHA-256("gpuledger-map-registry-leaf-v1\x00" || uint64be(changes) ||
//	        uint64be(index of the last change, 0 before any) || registry digest (32))
func RegistryLeaf(changes, lastIndex uint64, digest [32]byte) smt.Hash {
	b := make([]byte, 0, len(mapRegLeafTag)+16+32)
	b = append(b, mapRegLeafTag...)
	b = binary.BigEndian.AppendUint64(b, changes)
	b = binary.BigEndian.AppendUint64(b, lastIndex)
	b = append(b, digest[:]...)
	return sha256.Sum256(b)
}

// RegistryDigest is the SHA-256 of the registry's state: a Genesis message
// holding its participants (by id), nodes, policy and quorum, in
// deterministic protobuf form.
func RegistryDigest(r *Registry) ([32]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Genesis{
		Participants: r.Participants(), Nodes: r.Nodes(), Policy: r.Policy().Proto(), RegistryQuorum: uint32(r.Quorum()),
	})
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

func mapNodeKey(p smt.Position) []byte { return append([]byte{'n'}, p.Bytes()...) }
func mapRootKey(size uint64) []byte    { return u64('N', size) }

// txnMap is the map's node store in a badger transaction.
type txnMap struct{ txn *badger.Txn }

func (m txnMap) Get(p smt.Position) (*smt.Node, error) {
	b, err := getValue(m.txn, mapNodeKey(p))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return smt.UnmarshalNode(b)
}

func (m txnMap) Put(p smt.Position, n *smt.Node) error {
	if n == nil {
		return m.txn.Delete(mapNodeKey(p))
	}
	return m.txn.Set(mapNodeKey(p), n.Marshal())
}

// registryUpdate is the registry leaf's update for reg after changes
// changes, the last at lastIndex.
func registryUpdate(reg *Registry, changes, lastIndex uint64) (smt.Update, error) {
	d, err := RegistryDigest(reg)
	if err != nil {
		return smt.Update{}, err
	}
	return smt.Update{Key: RegistryMapKey, Value: RegistryLeaf(changes, lastIndex, d)}, nil
}

// updateMap applies updates to the map in txn and records its root for the
// log size.
func updateMap(txn *badger.Txn, size uint64, updates []smt.Update) (smt.Hash, error) {
	root, err := smt.Apply(txnMap{txn}, updates)
	if err != nil {
		return root, fmt.Errorf("serial map: %w", err)
	}
	if err := txn.Set(metaKey("map"), root[:]); err != nil {
		return root, err
	}
	return root, txn.Set(mapRootKey(size), root[:])
}

// MapRoot returns the map's root at a log size the ledger has held after a
// batch (or at 0), or ErrNotFound.
func (l *Ledger) MapRoot(size uint64) (smt.Hash, error) {
	var h smt.Hash
	err := l.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, mapRootKey(size))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("no map root at log size %d: %w", size, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if len(b) != smt.HashSize {
			return fmt.Errorf("%w: map root at size %d is %d bytes", ErrCorrupt, size, len(b))
		}
		copy(h[:], b)
		return nil
	})
	return h, err
}

// MapProof returns, from one snapshot of the store, the log size, the map
// root at that size, and key's value (nil: none) with its proof.
func (l *Ledger) MapProof(key smt.Hash) (size uint64, root smt.Hash, value *smt.Hash, proof *smt.Proof, err error) {
	err = l.db.View(func(txn *badger.Txn) error {
		b, err := getValue(txn, metaKey("size"))
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if len(b) == 8 {
			size = binary.BigEndian.Uint64(b)
		}
		rb, err := getValue(txn, metaKey("map"))
		if err != nil {
			return fmt.Errorf("the store keeps no serial map: %w", err)
		}
		copy(root[:], rb)
		value, proof, err = smt.Prove(txnMap{txn}, key)
		return err
	})
	return size, root, value, proof, err
}

// registryChanges is the number of registry changes before this batch.
func registryChanges(txn *badger.Txn) (uint64, error) {
	b, err := getValue(txn, metaKey("registry"))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil || len(b) != 8 {
		return 0, fmt.Errorf("%w: the registry change count: %v", ErrCorrupt, err)
	}
	return binary.BigEndian.Uint64(b), nil
}

// initMap starts the serial map of a new store: the registry of the
// genesis, no changes, at log size 0.
func initMap(txn *badger.Txn, reg *Registry) error {
	u, err := registryUpdate(reg, 0, 0)
	if err != nil {
		return err
	}
	_, err = updateMap(txn, 0, []smt.Update{u})
	return err
}

// Package smt is a sparse Merkle tree over 256-bit keys: the map that
// commits, in every checkpoint, to each serial's head (and the registry's),
// so that a node can prove what a serial's latest entry is, and that a
// serial it says nothing of has no entry at all.
//
// The tree is the binary trie of the keys' bits with shortcut leaves (as in
// Diem's Jellyfish Merkle tree and the compact sparse Merkle trees of the
// IETF key transparency work): a subtree that holds one key is that key's
// leaf, wherever it sits, and a subtree that holds none is Empty. So a key's
// path is only as long as its shortest prefix no other key shares: about
// log2(n) + 1 for n random keys, not 256. Hashes, SHA-256:
//
//	Empty         32 zero bytes
//	leaf(k, v)    SHA-256(0x00 || k || v)      k the 32-byte key, v the 32-byte value
//	node(l, r)    SHA-256(0x01 || l || r)      l, r the children's hashes
//
// and the root is the hash of the whole tree (Empty for no keys). The
// structure, and so every hash, depends only on the set of (key, value)
// pairs, never on the order they were written in.
//
// Nodes are kept in a Store by their position (depth and key prefix), so an
// update reads and writes only the nodes on the paths of the keys it
// changes, each once per batch however many of the batch's keys pass it.
package smt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
)

// HashSize is the size of keys, values and hashes.
const HashSize = 32

// Hash is a key, a value or a node's hash.
type Hash [HashSize]byte

// Empty is the hash of a subtree without keys.
var Empty Hash

// LeafHash is the hash of the leaf of key k with value v.
func LeafHash(k, v Hash) Hash {
	var b [1 + 2*HashSize]byte
	b[0] = 0
	copy(b[1:], k[:])
	copy(b[1+HashSize:], v[:])
	return sha256.Sum256(b[:])
}

// NodeHash is the hash of an inner node with children hashes l and r.
func NodeHash(l, r Hash) Hash {
	var b [1 + 2*HashSize]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[1+HashSize:], r[:])
	return sha256.Sum256(b[:])
}

// bit returns bit i of k, most significant first.
func bit(k Hash, i int) byte { return (k[i/8] >> (7 - uint(i%8))) & 1 }

// Node is a stored node: a leaf (Key and Value set, Leaf true) or an inner
// node (its children's hashes).
type Node struct {
	Leaf        bool
	Key, Value  Hash // a leaf's
	Left, Right Hash // an inner node's
}

// Hash returns the node's hash.
func (n *Node) Hash() Hash {
	if n.Leaf {
		return LeafHash(n.Key, n.Value)
	}
	return NodeHash(n.Left, n.Right)
}

// Marshal encodes the node: 0x00 key value, or 0x01 left right.
func (n *Node) Marshal() []byte {
	b := make([]byte, 1+2*HashSize)
	if n.Leaf {
		copy(b[1:], n.Key[:])
		copy(b[1+HashSize:], n.Value[:])
	} else {
		b[0] = 1
		copy(b[1:], n.Left[:])
		copy(b[1+HashSize:], n.Right[:])
	}
	return b
}

// UnmarshalNode decodes what Marshal wrote.
func UnmarshalNode(b []byte) (*Node, error) {
	if len(b) != 1+2*HashSize || b[0] > 1 {
		return nil, fmt.Errorf("smt: a stored node is %d bytes (first %x); want 65, 0x00 or 0x01 first", len(b), b[:min(1, len(b))])
	}
	n := &Node{Leaf: b[0] == 0}
	if n.Leaf {
		copy(n.Key[:], b[1:])
		copy(n.Value[:], b[1+HashSize:])
	} else {
		copy(n.Left[:], b[1:])
		copy(n.Right[:], b[1+HashSize:])
	}
	return n, nil
}

// Position names a node: its depth (0 for the root) and the first depth
// bits of the keys below it (the bits past depth are zero).
type Position struct {
	Depth  int
	Prefix Hash
}

// At returns the position at depth on key k's path.
func At(k Hash, depth int) Position {
	p := Position{Depth: depth}
	full := depth / 8
	copy(p.Prefix[:full], k[:full])
	if r := depth % 8; r > 0 {
		p.Prefix[full] = k[full] & ^byte(0xff>>uint(r))
	}
	return p
}

// Bytes encodes a position in order: depth, then the prefix's bytes that
// hold its bits (ceil(depth/8) of them).
func (p Position) Bytes() []byte {
	return append([]byte{byte(p.Depth)}, p.Prefix[:(p.Depth+7)/8]...)
}

// Store holds nodes by position. Get returns nil, nil for a position that
// holds none (an empty subtree). Put(p, nil) removes the node at p.
type Store interface {
	Get(p Position) (*Node, error)
	Put(p Position, n *Node) error
}

// MaxDepth is the depth below which two distinct keys cannot share a path.
const MaxDepth = 8 * HashSize

// ErrDuplicateKey means an update names a key twice.
var ErrDuplicateKey = errors.New("smt: a key is given twice in one update")

// Update is one key's new value; Delete removes the key instead.
type Update struct {
	Key, Value Hash
	Delete     bool
}

// Apply writes updates to the tree in s and returns its new root hash. The
// updates may come in any order; each key at most once.
func Apply(s Store, updates []Update) (Hash, error) {
	us := slices.Clone(updates)
	slices.SortFunc(us, func(a, b Update) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	for i := 1; i < len(us); i++ {
		if us[i].Key == us[i-1].Key {
			return Hash{}, ErrDuplicateKey
		}
	}
	root, err := s.Get(Position{})
	if err != nil {
		return Hash{}, err
	}
	n, err := update(s, Position{}, root, us)
	if err != nil {
		return Hash{}, err
	}
	if n == nil {
		return Empty, nil
	}
	return n.Hash(), nil
}

// update applies us (sorted, all under p) to the subtree at p whose node is
// cur (nil: empty), stores the result and returns the node now at p (nil:
// empty).
func update(s Store, p Position, cur *Node, us []Update) (*Node, error) {
	if len(us) == 0 {
		return cur, nil
	}
	if cur != nil && cur.Leaf {
		// The leaf that sat here moves down with the updates, unless one of
		// them replaces or deletes it.
		if i, found := slices.BinarySearchFunc(us, cur.Key, func(u Update, k Hash) int { return bytes.Compare(u.Key[:], k[:]) }); !found {
			us = slices.Insert(slices.Clone(us), i, Update{Key: cur.Key, Value: cur.Value})
		}
		cur = nil
	}
	if cur == nil {
		// Below an empty position (or a leaf taken apart): what remains.
		live := us[:0:0]
		for _, u := range us {
			if !u.Delete {
				live = append(live, u)
			}
		}
		switch len(live) {
		case 0:
			return nil, s.Put(p, nil)
		case 1:
			n := &Node{Leaf: true, Key: live[0].Key, Value: live[0].Value}
			return n, s.Put(p, n)
		}
		us = live
	}
	if p.Depth == MaxDepth {
		return nil, fmt.Errorf("smt: two keys share all %d bits", MaxDepth)
	}
	// Split the updates by the next bit and recurse into both children.
	split, _ := slices.BinarySearchFunc(us, byte(1), func(u Update, b byte) int { return int(bit(u.Key, p.Depth)) - int(b) })
	var kids [2]*Node
	var hashes [2]Hash
	if cur != nil {
		hashes = [2]Hash{cur.Left, cur.Right}
	}
	for side, part := range [2][]Update{us[:split], us[split:]} {
		if len(part) == 0 {
			continue
		}
		cp := child(p, byte(side))
		var old *Node
		if hashes[side] != Empty {
			var err error
			if old, err = s.Get(cp); err != nil {
				return nil, err
			}
			if old == nil {
				return nil, fmt.Errorf("smt: the node at depth %d names a child the store does not hold", p.Depth)
			}
		}
		n, err := update(s, cp, old, part)
		if err != nil {
			return nil, err
		}
		kids[side] = n
		hashes[side] = Empty
		if n != nil {
			hashes[side] = n.Hash()
		}
	}
	// A node left with one leaf below it and nothing else becomes that
	// leaf (moved up); with nothing, empty.
	switch {
	case hashes[0] == Empty && hashes[1] == Empty:
		return nil, s.Put(p, nil)
	case hashes[0] == Empty || hashes[1] == Empty:
		side := 0
		if hashes[0] == Empty {
			side = 1
		}
		only := kids[side]
		if only == nil { // unchanged child: read it
			var err error
			if only, err = s.Get(child(p, byte(side))); err != nil {
				return nil, err
			}
		}
		if only != nil && only.Leaf {
			if err := s.Put(child(p, byte(side)), nil); err != nil {
				return nil, err
			}
			return only, s.Put(p, only)
		}
	}
	n := &Node{Left: hashes[0], Right: hashes[1]}
	return n, s.Put(p, n)
}

// child is the position of p's child on side (0 left, 1 right).
func child(p Position, side byte) Position {
	c := Position{Depth: p.Depth + 1, Prefix: p.Prefix}
	if side == 1 {
		c.Prefix[p.Depth/8] |= 0x80 >> uint(p.Depth%8)
	}
	return c
}

// Check walks the whole tree in s from the root and returns its root hash,
// or the first position where the store does not hold a tree Apply could
// have written: an inner node whose children's hashes are not the hashes
// of the nodes below it, a leaf off its key's path, a child missing or one
// where a hash says none, or a lone leaf below an inner node (Apply lifts
// it). It reads every node once, depth first.
func Check(s Store) (Hash, error) {
	root, err := s.Get(Position{})
	if err != nil || root == nil {
		return Empty, err
	}
	return check(s, Position{}, root)
}

func check(s Store, p Position, n *Node) (Hash, error) {
	if n.Leaf {
		if At(n.Key, p.Depth) != p {
			return Empty, fmt.Errorf("the leaf at depth %d, prefix %x, is off its key's path (%x)", p.Depth, p.Prefix[:(p.Depth+7)/8], n.Key[:4])
		}
		return n.Hash(), nil
	}
	var kids [2]*Node
	for side, want := range [2]Hash{n.Left, n.Right} {
		cp := child(p, byte(side))
		k, err := s.Get(cp)
		if err != nil {
			return Empty, err
		}
		switch {
		case k == nil && want != Empty:
			return Empty, fmt.Errorf("the node at depth %d, prefix %x, names a child the store does not hold", p.Depth, p.Prefix[:(p.Depth+7)/8])
		case k == nil:
			continue
		case want == Empty:
			return Empty, fmt.Errorf("the node at depth %d, prefix %x, names no child where the store holds one", p.Depth, p.Prefix[:(p.Depth+7)/8])
		}
		h, err := check(s, cp, k)
		if err != nil {
			return Empty, err
		}
		if h != want {
			return Empty, fmt.Errorf("the node at depth %d, prefix %x, names a child hash that is not its child's", p.Depth, p.Prefix[:(p.Depth+7)/8])
		}
		kids[side] = k
	}
	switch {
	case kids[0] == nil && kids[1] == nil:
		return Empty, fmt.Errorf("the inner node at depth %d, prefix %x, has no children", p.Depth, p.Prefix[:(p.Depth+7)/8])
	case (kids[0] == nil && kids[1].Leaf) || (kids[1] == nil && kids[0].Leaf):
		return Empty, fmt.Errorf("the inner node at depth %d, prefix %x, holds a lone leaf (it should be that leaf)", p.Depth, p.Prefix[:(p.Depth+7)/8])
	}
	return n.Hash(), nil
}

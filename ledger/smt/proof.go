package smt

import (
	"errors"
	"fmt"
)

// A Proof shows what a tree of a given root holds at one key: the hashes of
// the siblings along the key's path, root first, and where the path ends —
// at the key's own leaf (the key is in the tree, with the value the
// verifier is given), at Empty, or at another key's leaf (Other: the key is
// not in the tree).
type Proof struct {
	Siblings []Hash
	Other    *Node
}

// Prove returns the value at key k (nil when the tree holds none) and its
// proof, from the tree in s.
func Prove(s Store, k Hash) (*Hash, *Proof, error) {
	pr := &Proof{}
	p := Position{}
	for {
		n, err := s.Get(p)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case n == nil:
			return nil, pr, nil
		case n.Leaf && n.Key == k:
			v := n.Value
			return &v, pr, nil
		case n.Leaf:
			pr.Other = &Node{Leaf: true, Key: n.Key, Value: n.Value}
			return nil, pr, nil
		}
		if p.Depth == MaxDepth {
			return nil, nil, errors.New("smt: a path deeper than the keys")
		}
		b := bit(k, p.Depth)
		if b == 0 {
			pr.Siblings = append(pr.Siblings, n.Right)
		} else {
			pr.Siblings = append(pr.Siblings, n.Left)
		}
		if (b == 0 && n.Left == Empty) || (b == 1 && n.Right == Empty) {
			return nil, pr, nil // the path ends at an empty child
		}
		p = child(p, b)
	}
}

// ErrProof means a proof does not show what it is said to against a root.
var ErrProof = errors.New("smt: the proof does not lead to the root")

// Verify checks that the tree whose root is root holds value at key k
// (value nil: holds no value at k), by proof.
func Verify(root, k Hash, value *Hash, p *Proof) error {
	if p == nil {
		return errors.New("smt: no proof")
	}
	if len(p.Siblings) > MaxDepth {
		return fmt.Errorf("smt: a proof of %d siblings, more than the keys have bits", len(p.Siblings))
	}
	var h Hash
	switch {
	case value != nil && p.Other != nil:
		return errors.New("smt: a proof of inclusion that ends at another key's leaf")
	case value != nil:
		h = LeafHash(k, *value)
	case p.Other != nil:
		o := p.Other
		if !o.Leaf || o.Key == k {
			return errors.New("smt: a proof of absence must end at another key's leaf")
		}
		for d := range len(p.Siblings) {
			if bit(o.Key, d) != bit(k, d) {
				return errors.New("smt: the other leaf of a proof of absence is not on the key's path")
			}
		}
		h = LeafHash(o.Key, o.Value)
	default:
		h = Empty
	}
	for d := len(p.Siblings) - 1; d >= 0; d-- {
		if bit(k, d) == 0 {
			h = NodeHash(h, p.Siblings[d])
		} else {
			h = NodeHash(p.Siblings[d], h)
		}
	}
	if h != root {
		return ErrProof
	}
	return nil
}

// Marshal encodes a proof compactly:
//
//	uint8 n                      the number of siblings (at most 255 in any tree of fewer than 2^255 keys)
//	ceil(n/8) bytes              bit i (most significant first) set when sibling i is not Empty
//	32 bytes per non-Empty sibling, root first
//	0x00                         the path ends at Empty or at the key's leaf
//	| 0x01 key value             or at another key's leaf
func (p *Proof) Marshal() ([]byte, error) {
	if len(p.Siblings) > 255 {
		return nil, errors.New("smt: a proof of more than 255 siblings")
	}
	n := len(p.Siblings)
	b := make([]byte, 1+(n+7)/8, 1+(n+7)/8+n*HashSize+1+2*HashSize)
	b[0] = byte(n)
	for i, s := range p.Siblings {
		if s != Empty {
			b[1+i/8] |= 0x80 >> uint(i%8)
			b = append(b, s[:]...)
		}
	}
	if p.Other == nil {
		return append(b, 0), nil
	}
	b = append(b, 1)
	b = append(b, p.Other.Key[:]...)
	return append(b, p.Other.Value[:]...), nil
}

// UnmarshalProof decodes what Marshal wrote, and nothing else.
func UnmarshalProof(b []byte) (*Proof, error) {
	bad := errors.New("smt: malformed proof")
	if len(b) < 2 {
		return nil, bad
	}
	n := int(b[0])
	if len(b) < 1+(n+7)/8 {
		return nil, bad
	}
	mask := b[1 : 1+(n+7)/8]
	if r := n % 8; r > 0 && mask[len(mask)-1]&(0xff>>uint(r)) != 0 {
		return nil, bad // bits past the last sibling
	}
	rest := b[1+len(mask):]
	p := &Proof{Siblings: make([]Hash, n)}
	for i := range n {
		if mask[i/8]&(0x80>>uint(i%8)) == 0 {
			continue
		}
		if len(rest) < HashSize {
			return nil, bad
		}
		copy(p.Siblings[i][:], rest)
		if p.Siblings[i] == Empty {
			return nil, bad // an Empty sibling is marked in the mask, not written
		}
		rest = rest[HashSize:]
	}
	switch {
	case len(rest) == 1 && rest[0] == 0:
	case len(rest) == 1+2*HashSize && rest[0] == 1:
		p.Other = &Node{Leaf: true}
		copy(p.Other.Key[:], rest[1:])
		copy(p.Other.Value[:], rest[1+HashSize:])
	default:
		return nil, bad
	}
	return p, nil
}

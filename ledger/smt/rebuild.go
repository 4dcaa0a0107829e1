package smt

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// ErrRebuildDelete means Rebuild was given a deletion: it rebuilds only
// trees whose keys, once set, stay.
var ErrRebuildDelete = errors.New("smt: Rebuild takes no deletions")

// Rebuild brings the top of a tree, the nodes above depth cut, from an
// earlier version of the tree to a later one. top holds the earlier
// version's nodes above cut, exactly as Apply left them; bottom holds the
// later version's nodes at cut and below (Rebuild only reads it); updates
// are the keys set between the two versions, each with its latest value
// (no deletions: the earlier version's keys are all in the later one).
// Rebuild writes the later version's nodes above cut to top and returns
// its root hash.
//
// It is how a store that writes the tree's top levels behind (in a
// snapshot now and then, with a journal of the updates since) recovers
// them: only the nodes on the updated keys' paths are recomputed, each
// from the later version's nodes below cut and the earlier version's
// nodes beside the paths, which the updates did not change.
func Rebuild(top, bottom Store, cut int, updates []Update) (Hash, error) {
	if cut < 0 || cut > MaxDepth {
		return Empty, fmt.Errorf("smt: Rebuild at depth %d", cut)
	}
	us := slices.Clone(updates)
	slices.SortFunc(us, func(a, b Update) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	for i := range us {
		if us[i].Delete {
			return Empty, ErrRebuildDelete
		}
		if i > 0 && us[i].Key == us[i-1].Key {
			return Empty, ErrDuplicateKey
		}
	}
	n, err := rebuild(top, bottom, cut, Position{}, us)
	if err != nil {
		return Empty, err
	}
	if cut > 0 && len(us) > 0 {
		if err := top.Put(Position{}, n); err != nil {
			return Empty, err
		}
	}
	if n == nil {
		return Empty, nil
	}
	return n.Hash(), nil
}

// rebuild returns the later version's node at p (depth at most cut),
// having written the later version's nodes strictly below p and above cut.
// us (sorted) holds the keys under p that were set since the earlier
// version, and the earlier version's leaves met above p on the way down,
// which may have moved down since.
func rebuild(top, bottom Store, cut int, p Position, us []Update) (*Node, error) {
	if p.Depth == cut {
		// The later version's nodes from cut down are bottom's. Where it
		// holds none, at most one key is below p, and its leaf sits above.
		n, err := bottom.Get(p)
		if err != nil || n != nil {
			return n, err
		}
		switch len(us) {
		case 0:
			return nil, nil
		case 1:
			return &Node{Leaf: true, Key: us[0].Key, Value: us[0].Value}, nil
		}
		return nil, fmt.Errorf("smt: %d keys below depth %d, prefix %x, where the later version holds nothing", len(us), p.Depth, p.Prefix[:(p.Depth+7)/8])
	}
	cur, err := top.Get(p)
	if err != nil || len(us) == 0 {
		// Nothing below p was set: the subtree is as it was. (Below a leaf
		// of the earlier version that moved down, both versions hold
		// nothing here.)
		return cur, err
	}
	if cur != nil && cur.Leaf {
		// The earlier version's leaf here is still in the tree, below p
		// now unless an update replaced it.
		if i, found := slices.BinarySearchFunc(us, cur.Key, func(u Update, k Hash) int { return bytes.Compare(u.Key[:], k[:]) }); !found {
			us = slices.Insert(slices.Clone(us), i, Update{Key: cur.Key, Value: cur.Value})
		}
	}
	if p.Depth == MaxDepth {
		return nil, fmt.Errorf("smt: two keys share all %d bits", MaxDepth)
	}
	split, _ := slices.BinarySearchFunc(us, byte(1), func(u Update, b byte) int { return int(bit(u.Key, p.Depth)) - int(b) })
	var kids [2]*Node
	for side, part := range [2][]Update{us[:split], us[split:]} {
		if kids[side], err = rebuild(top, bottom, cut, child(p, byte(side)), part); err != nil {
			return nil, err
		}
	}
	// As Apply leaves it: a lone leaf moves up into p.
	var n *Node
	lifted := -1
	switch {
	case kids[0] == nil && kids[1] == nil:
	case kids[0] == nil && kids[1].Leaf:
		n, lifted = kids[1], 1
	case kids[1] == nil && kids[0].Leaf:
		n, lifted = kids[0], 0
	default:
		n = &Node{Left: nodeHash(kids[0]), Right: nodeHash(kids[1])}
	}
	if p.Depth+1 < cut {
		for side, part := range [2][]Update{us[:split], us[split:]} {
			kid := kids[side]
			if side == lifted {
				kid = nil
			}
			// (A side without updates is as it was; it cannot be the one
			// lifted, for the other side then holds a key.)
			if len(part) > 0 {
				if err := top.Put(child(p, byte(side)), kid); err != nil {
					return nil, err
				}
			}
		}
	}
	return n, nil
}

func nodeHash(n *Node) Hash {
	if n == nil {
		return Empty
	}
	return n.Hash()
}

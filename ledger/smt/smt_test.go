package smt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// reference computes the root of a set of (key, value) pairs straight from
// the definition, with no store: the naive implementation the tree is
// checked against.
func reference(m map[Hash]Hash) Hash {
	keys := make([]Hash, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b Hash) int { return bytes.Compare(a[:], b[:]) })
	var rec func(ks []Hash, depth int) Hash
	rec = func(ks []Hash, depth int) Hash {
		switch len(ks) {
		case 0:
			return Empty
		case 1:
			return LeafHash(ks[0], m[ks[0]])
		}
		var l, r []Hash
		for _, k := range ks {
			if bit(k, depth) == 0 {
				l = append(l, k)
			} else {
				r = append(r, k)
			}
		}
		return NodeHash(rec(l, depth+1), rec(r, depth+1))
	}
	return rec(keys, 0)
}

func key(i int) Hash { return sha256.Sum256(binary.BigEndian.AppendUint64([]byte("key"), uint64(i))) }
func val(i, v int) Hash {
	return sha256.Sum256(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte("val"), uint64(i)), uint64(v)))
}

// TestAgainstReference: random batches of inserts, updates and deletes,
// applied in random orders and batch sizes, give the reference's root after
// every batch; the store holds exactly the nodes of the canonical tree.
func TestAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		s := MemStore{}
		m := map[Hash]Hash{}
		for batch := range 30 {
			var us []Update
			seen := map[Hash]bool{}
			for range 1 + r.IntN(40) {
				i := r.IntN(200)
				k := key(i)
				if seen[k] {
					continue
				}
				seen[k] = true
				if _, ok := m[k]; ok && r.IntN(3) == 0 {
					us = append(us, Update{Key: k, Delete: true})
					delete(m, k)
				} else {
					v := val(i, batch)
					us = append(us, Update{Key: k, Value: v})
					m[k] = v
				}
			}
			r.Shuffle(len(us), func(a, b int) { us[a], us[b] = us[b], us[a] })
			root, err := Apply(s, us)
			if err != nil {
				t.Fatal(err)
			}
			if want := reference(m); root != want {
				t.Fatalf("trial %d batch %d: root %x, the reference's %x (%d keys)", trial, batch, root, want, len(m))
			}
			if want := canonicalNodes(len(m)); len(m) > 0 && len(s) != want(s) {
				t.Fatalf("trial %d batch %d: the store holds %d nodes", trial, batch, len(s))
			}
		}
	}
}

// canonicalNodes checks the store's node count: a tree of n > 0 keys with
// shortcut leaves holds n leaves and, here, the inner nodes reachable from
// the root; any other node is garbage left behind.
func canonicalNodes(n int) func(MemStore) int {
	return func(s MemStore) int {
		count := 0
		var walk func(p Position)
		walk = func(p Position) {
			nd, _ := s.Get(p)
			if nd == nil {
				return
			}
			count++
			if !nd.Leaf {
				if nd.Left != Empty {
					walk(child(p, 0))
				}
				if nd.Right != Empty {
					walk(child(p, 1))
				}
			}
		}
		walk(Position{})
		return count
	}
}

// TestProofs: inclusion for every key present and absence for keys never
// present, at 0, 1, 2, 3 and 1,000 keys; every single-bit change of an
// encoded proof is refused or fails to verify, and so does the wrong value.
func TestProofs(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := MemStore{}
			var us []Update
			for i := range n {
				us = append(us, Update{Key: key(i), Value: val(i, 0)})
			}
			root, err := Apply(s, us)
			if err != nil {
				t.Fatal(err)
			}
			check := func(k Hash, want *Hash, flips bool) {
				t.Helper()
				v, p, err := Prove(s, k)
				if err != nil {
					t.Fatal(err)
				}
				if (v == nil) != (want == nil) || (v != nil && *v != *want) {
					t.Fatalf("Prove(%x) = %v, want %v", k[:4], v, want)
				}
				if err := Verify(root, k, v, p); err != nil {
					t.Fatalf("Verify(%x): %v", k[:4], err)
				}
				b, err := p.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				q, err := UnmarshalProof(b)
				if err != nil || Verify(root, k, v, q) != nil {
					t.Fatalf("the encoded proof does not round-trip: %v", err)
				}
				if v != nil {
					wrong := val(999999, 1)
					if Verify(root, k, &wrong, p) == nil {
						t.Fatal("a wrong value verifies")
					}
					if Verify(root, k, nil, p) == nil {
						t.Fatal("an inclusion proof verifies as absence")
					}
				} else if n > 0 {
					some := val(0, 0)
					if Verify(root, k, &some, p) == nil {
						t.Fatal("an absence proof verifies as inclusion")
					}
				}
				if !flips {
					return
				}
				for i := range 8 * len(b) {
					c := bytes.Clone(b)
					c[i/8] ^= 0x80 >> uint(i%8)
					if q, err := UnmarshalProof(c); err == nil && Verify(root, k, v, q) == nil {
						t.Fatalf("proof of %x with bit %d flipped verifies", k[:4], i)
					}
				}
				if v != nil {
					for i := range 8 * HashSize {
						w := *v
						w[i/8] ^= 0x80 >> uint(i%8)
						if Verify(root, k, &w, p) == nil {
							t.Fatalf("value with bit %d flipped verifies", i)
						}
					}
				}
			}
			for i := range min(n, 50) {
				v := val(i, 0)
				check(key(i), &v, i < 5)
			}
			for i := n; i < n+50; i++ {
				check(key(i), nil, i < n+5)
			}
		})
	}
}

// TestOrderIndependent: the same final set reached by different histories
// (one batch, one key at a time, with keys added and removed on the way)
// has the same root and the same stored nodes.
func TestOrderIndependent(t *testing.T) {
	var final []Update
	for i := range 300 {
		final = append(final, Update{Key: key(i), Value: val(i, 7)})
	}
	a := MemStore{}
	ra, _ := Apply(a, final)
	b := MemStore{}
	for i := 299; i >= 0; i-- {
		Apply(b, []Update{{Key: key(i + 1000), Value: val(i, 1)}})
		Apply(b, []Update{{Key: key(i), Value: val(i, 3)}})
	}
	for i := range 300 {
		Apply(b, []Update{{Key: key(i + 1000), Delete: true}, {Key: key(i), Value: val(i, 7)}})
	}
	rb, _ := Apply(b, nil)
	if ra != rb || len(a) != len(b) {
		t.Fatalf("roots %x and %x, %d and %d nodes", ra, rb, len(a), len(b))
	}
	for k, n := range a {
		if m := b[k]; m == nil || *m != *n {
			t.Fatalf("the stores differ at %x", k)
		}
	}
	if _, err := Apply(a, []Update{{Key: key(1)}, {Key: key(1)}}); err != ErrDuplicateKey {
		t.Fatalf("a key twice: %v", err)
	}
}

// TestProofsAtMillion: at 1,000,000 leaves, the root is the reference's,
// a sample of leaves proves its value, keys never inserted prove their
// absence, and every single-bit change of a few of those proofs is refused.
func TestProofsAtMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a tree of a million leaves")
	}
	const n = 1_000_000
	s := MemStore{}
	m := make(map[Hash]Hash, n)
	var root Hash
	for start := 0; start < n; start += 100_000 {
		us := make([]Update, 0, 100_000)
		for i := start; i < start+100_000; i++ {
			us = append(us, Update{Key: key(i), Value: val(i, 0)})
			m[key(i)] = val(i, 0)
		}
		var err error
		if root, err = Apply(s, us); err != nil {
			t.Fatal(err)
		}
	}
	if want := reference(m); root != want {
		t.Fatalf("root %x, the reference's %x", root, want)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for j := range 400 {
		k, want := key(n+j), (*Hash)(nil) // never inserted
		if j%2 == 0 {
			i := rng.IntN(n)
			w := val(i, 0)
			k, want = key(i), &w
		}
		v, p, err := Prove(s, k)
		if err != nil || (v == nil) != (want == nil) || (v != nil && *v != *want) {
			t.Fatalf("Prove(%x) = %v, %v; want %v", k[:4], v, err, want)
		}
		if err := Verify(root, k, v, p); err != nil {
			t.Fatalf("Verify(%x): %v", k[:4], err)
		}
		if j >= 4 {
			continue
		}
		b, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		for i := range 8 * len(b) {
			c := bytes.Clone(b)
			c[i/8] ^= 0x80 >> uint(i%8)
			if q, err := UnmarshalProof(c); err == nil && Verify(root, k, v, q) == nil {
				t.Fatalf("proof of %x with bit %d flipped verifies", k[:4], i)
			}
		}
	}
}

// TestCheck: Check gives Apply's root for a tree Apply wrote, and refuses
// every one-node change of it: a hash altered in an inner node or a leaf's
// value, a node removed, a leaf moved off its path.
func TestCheck(t *testing.T) {
	s := MemStore{}
	var us []Update
	for i := range 1000 {
		us = append(us, Update{Key: key(i), Value: val(i, 0)})
	}
	root, err := Apply(s, us)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Check(s); err != nil || got != root {
		t.Fatalf("Check = %x, %v; Apply's root %x", got, err, root)
	}
	if got, err := Check(MemStore{}); err != nil || got != Empty {
		t.Fatalf("Check(empty) = %x, %v", got, err)
	}
	changes := 0
	for k, n := range s {
		if k == string(Position{}.Bytes()) {
			continue // the root: a change there is a change of the root, which the caller compares
		}
		clone := func() MemStore {
			c := MemStore{}
			for k2, n2 := range s {
				c[k2] = n2
			}
			return c
		}
		c := clone()
		m := *n
		if m.Leaf {
			m.Value[0] ^= 1
		} else {
			m.Left[31] ^= 1
		}
		c[k] = &m
		if got, err := Check(c); err == nil && got == root {
			t.Fatalf("a hash changed at %x: Check passes", k)
		}
		c = clone()
		delete(c, k)
		if got, err := Check(c); err == nil && got == root {
			t.Fatalf("the node at %x removed: Check passes", k)
		}
		if changes++; changes == 300 {
			break
		}
	}
	// A leaf stored one level off its path.
	for k, n := range s {
		if !n.Leaf || k == string(Position{}.Bytes()) {
			continue
		}
		c := MemStore{}
		for k2, n2 := range s {
			c[k2] = n2
		}
		p := At(n.Key, int(k[0]))
		delete(c, k)
		other := child(Position{Depth: p.Depth - 1, Prefix: At(n.Key, p.Depth-1).Prefix}, 1-bit(n.Key, p.Depth-1))
		if c[string(other.Bytes())] != nil {
			continue
		}
		c[string(other.Bytes())] = n
		if _, err := Check(c); err == nil {
			t.Fatalf("a leaf moved to its sibling's place: Check passes")
		}
		break
	}
}

package smt

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// split returns the nodes of s above cut (top) and at cut and below.
func split(s MemStore, cut int) (top, bottom MemStore) {
	top, bottom = MemStore{}, MemStore{}
	for k, n := range s {
		if int(k[0]) < cut {
			top[k] = n
		} else {
			bottom[k] = n
		}
	}
	return top, bottom
}

// TestRebuild: a tree's top, as it was at an earlier version, rebuilt from
// the later version's nodes below the cut and the keys set in between,
// holds exactly the nodes Apply gave the later version, at every cut, for
// trees of 0 to 3,000 keys and any number of batches in between (new keys
// and new values of old ones, leaves that move down and up).
func TestRebuild(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n0 := range []int{0, 1, 2, 3, 10, 200, 3000} {
		for _, cut := range []int{1, 2, 4, 5, 8, 12, 20} {
			for trial := range 4 {
				t.Run(fmt.Sprintf("keys-%d/cut-%d/%d", n0, cut, trial), func(t *testing.T) {
					s := MemStore{}
					m := map[Hash]Hash{}
					var us []Update
					for i := range n0 {
						m[key(i)] = val(i, 0)
						us = append(us, Update{Key: key(i), Value: val(i, 0)})
					}
					if _, err := Apply(s, us); err != nil {
						t.Fatal(err)
					}
					earlier, _ := split(s, cut)
					// Batches after the earlier version: what the journal keeps.
					set := map[Hash]Hash{}
					for range r.IntN(5) {
						var batch []Update
						seen := map[Hash]bool{}
						for range r.IntN(1 + n0/2 + 20) {
							i := r.IntN(n0 + 40)
							if seen[key(i)] {
								continue
							}
							seen[key(i)] = true
							v := val(i, 1+r.IntN(1000))
							batch = append(batch, Update{Key: key(i), Value: v})
							m[key(i)], set[key(i)] = v, v
						}
						if _, err := Apply(s, batch); err != nil {
							t.Fatal(err)
						}
					}
					want := reference(m)
					laterTop, bottom := split(s, cut)
					var journal []Update
					for k, v := range set {
						journal = append(journal, Update{Key: k, Value: v})
					}
					got, err := Rebuild(earlier, bottom, cut, journal)
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Fatalf("root %x, want %x", got[:4], want[:4])
					}
					if len(earlier) != len(laterTop) {
						t.Fatalf("rebuilt top holds %d nodes, Apply's %d", len(earlier), len(laterTop))
					}
					for k, n := range laterTop {
						if e := earlier[k]; e == nil || *e != *n {
							t.Fatalf("rebuilt top differs at %x", k)
						}
					}
				})
			}
		}
	}
}

// TestRebuildRefuses: deletions, a key twice, and a bottom that cannot be
// the later version of the tree are errors.
func TestRebuildRefuses(t *testing.T) {
	s := MemStore{}
	var us []Update
	for i := range 100 {
		us = append(us, Update{Key: key(i), Value: val(i, 0)})
	}
	if _, err := Apply(s, us); err != nil {
		t.Fatal(err)
	}
	top, _ := split(s, 4)
	if _, err := Rebuild(top, MemStore{}, 4, []Update{{Key: key(1), Delete: true}}); !errors.Is(err, ErrRebuildDelete) {
		t.Fatalf("deletion: %v", err)
	}
	if _, err := Rebuild(top, MemStore{}, 4, []Update{{Key: key(1)}, {Key: key(1)}}); !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("a key twice: %v", err)
	}
	// An empty bottom where 100 keys sit below the cut.
	if _, err := Rebuild(top, MemStore{}, 4, us); err == nil {
		t.Fatal("an empty bottom under 100 keys was taken")
	}
}

package ledger_test

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/smt"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// TestAuditCommitChunks: an audit store's Commit writes its serials a
// chunk a transaction, each chunk's commit overlapping the next chunk's map
// update; whatever the chunk size, every commit gives the root a map built
// from scratch over all the leaves gives, and a store reopened (its tiles
// read back from disk) goes on giving it.
func TestAuditCommitChunks(t *testing.T) {
	c, err := consortium.Build(consortium.Dev(), consortium.Options{Rand: rand.NewChaCha8([32]byte{15})})
	if err != nil {
		t.Fatal(err)
	}
	g, err := ledger.ParseGenesis(c.Genesis)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := ledger.NewRegistry(g)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := ledger.RegistryDigest(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{1, 7, 64, 2000} {
		t.Run(fmt.Sprint("chunk=", chunk), func(t *testing.T) {
			defer ledger.SetAuditChunk(chunk)()
			rng := rand.New(rand.NewPCG(uint64(chunk), 3))
			dir := filepath.Join(t.TempDir(), "audit")
			all := map[string]*pb.SerialState{}
			var size uint64
			// Rounds: all new, some changed and some new, one changed, none;
			// then pairs of serials whose map keys share 24 bits or more
			// (their leaves are below the tiles kept in memory), added
			// together and then changed together: with one serial a chunk,
			// the second reads a tile the first's transaction is writing.
			type round struct {
				changed, added int
				serials        []string
			}
			rounds := []round{{0, 300, nil}, {90, 40, nil}, {1, 0, nil}, {0, 0, nil}, {150, 150, nil}}
			for _, p := range deepPairs(t, 4) {
				rounds = append(rounds, round{serials: p[:]}, round{serials: p[:]}, round{serials: p[:1]}, round{serials: p[:]})
			}
			for round, n := range rounds {
				store, err := ledger.OpenAuditStore(dir) // reopened each round: tiles come from disk
				if err != nil {
					t.Fatal(err)
				}
				states := map[string]*pb.SerialState{}
				keys := make([]string, 0, len(all))
				for k := range all {
					keys = append(keys, k)
				}
				for i := 0; i < n.changed; i++ {
					states[keys[rng.IntN(len(keys))]] = nil
				}
				for i := 0; i < n.added; i++ {
					states[fmt.Sprintf("SN-%d-%d", round, i)] = nil
				}
				for _, serial := range n.serials {
					states[serial] = nil
				}
				for serial := range states {
					size++
					head := sha256.Sum256(fmt.Appendf(nil, "%s %d", serial, size))
					st := &pb.SerialState{Serial: serial, HeadHash: head[:], EventCount: uint64(rng.IntN(50) + 1), LastIndex: size}
					states[serial], all[serial] = st, st
				}
				got, err := store.Commit(ledger.AuditMark{Size: size}, states, reg, nil)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				want := mapFromScratch(t, slices.Collect(maps.Values(all)), ledger.RegistryLeaf(0, 0, digest))
				if got != want {
					t.Fatalf("round %d (%d serials changed): root %x, a map built from scratch %x", round, len(states), got, want)
				}
				m, err := store.Mark()
				if err != nil || m == nil || m.MapRoot != want || m.Size != size {
					t.Fatalf("round %d: mark %+v, %v", round, m, err)
				}
				for serial, st := range states {
					if got, err := store.State(serial); err != nil || !proto.Equal(got, st) {
						t.Fatalf("round %d: state of %s %v, %v; committed %v", round, serial, got, err, st)
					}
				}
				if err := store.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// mapFromScratch is the root of a map built in memory from the serials'
// states (each leaf as Apply makes it, from the state's deterministic
// encoding) and the registry's leaf.
func mapFromScratch(t *testing.T, states []*pb.SerialState, registry smt.Hash) smt.Hash {
	t.Helper()
	updates := []smt.Update{{Key: ledger.RegistryMapKey, Value: registry}}
	for _, st := range states {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		updates = append(updates, smt.Update{Key: ledger.MapKey(st.GetSerial()), Value: ledger.SerialLeaf(st.GetHeadHash(), st.GetEventCount(), st.GetLastIndex(), sha256.Sum256(b))})
	}
	root, err := smt.Apply(smt.MemStore{}, updates)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// deepPairs returns n pairs of serials whose map keys share their first 24
// bits.
func deepPairs(t *testing.T, n int) [][2]string {
	t.Helper()
	seen := map[[3]byte]string{}
	var pairs [][2]string
	for i := 0; len(pairs) < n; i++ {
		if i > 1<<22 {
			t.Fatal("no pairs of map keys sharing 24 bits")
		}
		serial := fmt.Sprintf("DEEP-%d", i)
		k := ledger.MapKey(serial)
		p := [3]byte(k[:3])
		if other, ok := seen[p]; ok {
			pairs = append(pairs, [2]string{other, serial})
			delete(seen, p)
			continue
		}
		seen[p] = serial
	}
	return pairs
}

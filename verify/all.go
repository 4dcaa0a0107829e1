package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"

	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// AllReport is the outcome of verifying a whole log.
type AllReport struct {
	Entries   uint64
	Root      [32]byte
	Serials   int
	Registry  int // registry-change entries applied
	Failures  []*Failure
	Truncated bool // more failures than kept
	// Heads is each serial's last entry hash and entry count, as rebuilt.
	Heads map[string]Head
}

// Head is a serial's head as rebuilt from the log.
type Head struct {
	Hash  [32]byte
	Count uint64
}

// OK reports whether nothing failed.
func (r *AllReport) OK() bool { return len(r.Failures) == 0 }

// First returns the lowest failing index, or -1.
func (r *AllReport) First() int64 {
	first := int64(-1)
	for _, f := range r.Failures {
		if first < 0 || (f.Index >= 0 && f.Index < first) {
			first = f.Index
		}
	}
	return first
}

const maxFailures = 100

// All verifies a log streamed from index 0 by next (which returns nil at the
// end): every entry's index, its leaf (recomputed from its bytes) into a
// Merkle root, its signatures under the registry rebuilt from the genesis and
// the log's registry changes (in parallel on all cores), and every serial's
// chain links. Memory grows with the number of serials, not of entries.
// progress, if set, is called with the entries seen so far.
func (v *Verifier) All(ctx context.Context, next func() (*pb.Entry, error), progress func(uint64)) (*AllReport, error) {
	rep := &AllReport{Heads: map[string]Head{}}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	rng := rf.NewEmptyRange(0)
	reg := v.registry
	var mu sync.Mutex
	fail := func(f *Failure) {
		mu.Lock()
		defer mu.Unlock()
		if len(rep.Failures) < maxFailures {
			rep.Failures = append(rep.Failures, f)
		} else {
			rep.Truncated = true
		}
	}
	type job struct {
		e   *pb.Entry
		reg *ledger.Registry
	}
	// A pool of signature checkers; restarted around registry changes so
	// that every check has finished before the registry changes.
	var jobs chan job
	var wg sync.WaitGroup
	start := func() {
		jobs = make(chan job, 1024)
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func(jobs <-chan job) func() {
				return func() {
					for j := range jobs {
						if err := v.checker.Check(j.e, j.reg); err != nil {
							fail(fail0(int64(j.e.GetIndex()), "signature check failed: %v", err))
						}
					}
				}
			}(jobs))
		}
	}
	stop := func() {
		close(jobs)
		wg.Wait()
	}
	start()
	defer func() { stop() }()
	drain := func() { stop(); start() }
	for i := uint64(0); ; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, err := next()
		if err != nil {
			return nil, err
		}
		if e == nil {
			break
		}
		if e.GetIndex() != i {
			fail(fail0(int64(i), "entry %d is missing: the log goes on with entry %d", i, e.GetIndex()))
			return v.finish(rep, rng, i)
		}
		eh := sha256.Sum256(e.GetEnvelope())
		lh := ledger.LeafHash(i, e.GetAcceptedAt().AsTime().UnixNano(), eh)
		if err := rng.Append(lh[:], nil); err != nil {
			return nil, err
		}
		env, rej := ledger.DecodeEnvelope(e.GetEnvelope())
		if rej != nil {
			fail(fail0(int64(i), "envelope: %v", rej))
			continue
		}
		if env.GetPayloadType() == "application/vnd.gpuledger.registry-change+proto" {
			drain()
			if err := v.checker.Check(e, reg); err != nil {
				fail(fail0(int64(i), "registry change: %v", err))
				continue
			}
			ch := new(pb.RegistryChange)
			if err := ledger.UnmarshalPayload(env, ch); err != nil {
				fail(fail0(int64(i), "registry change: %v", err))
				continue
			}
			next, err := reg.WithChange(ch, i)
			if err != nil {
				fail(fail0(int64(i), "registry change does not apply: %v", err))
				continue
			}
			reg = next
			rep.Registry++
		} else {
			ev := new(pb.CustodyEvent)
			if err := ledger.UnmarshalPayload(env, ev); err != nil {
				fail(fail0(int64(i), "custody event: %v", err))
				continue
			}
			h, seen := rep.Heads[ev.GetSerial()]
			switch {
			case !seen && ev.GetType() != pb.EventType_EVENT_TYPE_MANUFACTURED:
				fail(fail0(int64(i), "serial %s starts without MANUFACTURED", ev.GetSerial()))
			case seen && !bytes.Equal(ev.GetPrevEventHash(), h.Hash[:]):
				fail(fail0(int64(i), "serial %s: prev_event_hash %x does not link to its previous entry %x", ev.GetSerial(), ev.GetPrevEventHash(), h.Hash[:]))
			}
			rep.Heads[ev.GetSerial()] = Head{Hash: eh, Count: h.Count + 1}
			jobs <- job{e, reg}
		}
		if progress != nil && i%4096 == 0 {
			progress(i)
		}
	}
	return v.finish(rep, rng, rng.End())
}

func (v *Verifier) finish(rep *AllReport, rng *compact.Range, n uint64) (*AllReport, error) {
	rep.Entries = n
	rep.Serials = len(rep.Heads)
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		root = rfc6962.DefaultHasher.EmptyRoot()
	}
	copy(rep.Root[:], root)
	return rep, nil
}

func fail0(index int64, format string, args ...any) *Failure {
	return &Failure{Index: index, What: fmt.Sprintf(format, args...)}
}

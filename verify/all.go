package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"runtime"
	"sync"

	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/proto"
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

// FirstProblem says what failed at the lowest failing index.
func (r *AllReport) FirstProblem() string {
	first := r.First()
	for _, f := range r.Failures {
		if f.Index == first {
			return f.What
		}
	}
	return ""
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
	s := v.NewStream()
	defer s.Close()
	for {
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
		if err := s.Add(e); err != nil {
			return nil, err
		}
		if progress != nil && e.GetIndex()%4096 == 0 {
			progress(e.GetIndex())
		}
		if s.stopped {
			break
		}
	}
	return s.Finish()
}

// Stream verifies a log fed to it entry by entry, in order (see All). Add
// and Finish must be called from one goroutine; Close releases the
// signature-checking goroutines.
type Stream struct {
	v       *Verifier
	rep     *AllReport
	rng     *compact.Range
	reg     *ledger.Registry
	next    uint64
	stopped bool
	mu      sync.Mutex
	jobs    chan streamJob
	wg      sync.WaitGroup
}

type streamJob struct {
	e   *pb.Entry
	reg *ledger.Registry
}

var rangeFactory = compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// NewStream starts a stream verifier.
func (v *Verifier) NewStream() *Stream {
	s := &Stream{v: v, rep: &AllReport{Heads: map[string]Head{}}, rng: rangeFactory.NewEmptyRange(0), reg: v.registry}
	s.start()
	return s
}

func (s *Stream) fail(f *Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rep.Failures) < maxFailures {
		s.rep.Failures = append(s.rep.Failures, f)
	} else {
		s.rep.Truncated = true
	}
}

// start runs a pool of signature checkers on GOMAXPROCS goroutines.
func (s *Stream) start() {
	jobs := make(chan streamJob, 1024)
	s.jobs = jobs
	for range runtime.GOMAXPROCS(0) {
		s.wg.Go(func() {
			for j := range jobs {
				// The stream recomputes the Merkle root over every entry, so
				// the bytes are bound; the caller compares the root.
				if err := s.v.checker.CheckBound(j.e, j.reg); err != nil {
					s.fail(fail(int64(j.e.GetIndex()), "signature check failed: %v", err))
				}
			}
		})
	}
}

// Wait blocks until every signature check queued so far has finished.
func (s *Stream) Wait() {
	close(s.jobs)
	s.wg.Wait()
	s.start()
}

// Close stops the checkers (after the queued checks).
func (s *Stream) Close() {
	if s.jobs != nil {
		close(s.jobs)
		s.wg.Wait()
		s.jobs = nil
	}
}

// Add verifies the next entry. Problems are recorded as failures; the error
// is for the stream itself.
func (s *Stream) Add(e *pb.Entry) error {
	if s.stopped {
		return nil
	}
	i := s.next
	if e.GetIndex() != i {
		s.fail(fail(int64(i), "entry %d is missing: the log goes on with entry %d", i, e.GetIndex()))
		s.stopped = true
		return nil
	}
	s.next++
	eh := sha256.Sum256(e.GetEnvelope())
	lh := ledger.LeafHash(i, e.GetAcceptedAt().AsTime().UnixNano(), eh)
	if err := s.rng.Append(lh[:], nil); err != nil {
		return err
	}
	// A plain decode here, for the links and the registry; the checkers
	// verify canonical form, structure and signatures.
	env := new(pb.Envelope)
	if err := proto.Unmarshal(e.GetEnvelope(), env); err != nil {
		s.fail(fail(int64(i), "envelope: %v", err))
		return nil
	}
	if env.GetPayloadType() == "application/vnd.gpuledger.registry-change+proto" {
		s.Wait() // every earlier check sees the registry of its own index
		if err := s.v.checker.Check(e, s.reg); err != nil {
			s.fail(fail(int64(i), "registry change: %v", err))
			return nil
		}
		ch := new(pb.RegistryChange)
		if err := ledger.UnmarshalPayload(env, ch); err != nil {
			s.fail(fail(int64(i), "registry change: %v", err))
			return nil
		}
		next, err := s.reg.WithChange(ch, i)
		if err != nil {
			s.fail(fail(int64(i), "registry change does not apply: %v", err))
			return nil
		}
		s.reg = next
		s.rep.Registry++
		return nil
	}
	ev := new(pb.CustodyEvent)
	if err := proto.Unmarshal(env.GetPayload(), ev); err != nil {
		s.fail(fail(int64(i), "custody event: %v", err))
		return nil
	}
	h, seen := s.rep.Heads[ev.GetSerial()]
	switch {
	case !seen && ev.GetType() != pb.EventType_EVENT_TYPE_MANUFACTURED:
		s.fail(fail(int64(i), "serial %s starts without MANUFACTURED", ev.GetSerial()))
	case seen && !bytes.Equal(ev.GetPrevEventHash(), h.Hash[:]):
		s.fail(fail(int64(i), "serial %s: prev_event_hash %x does not link to its previous entry %x", ev.GetSerial(), ev.GetPrevEventHash(), h.Hash[:]))
	}
	s.rep.Heads[ev.GetSerial()] = Head{Hash: eh, Count: h.Count + 1}
	s.jobs <- streamJob{e, s.reg}
	return nil
}

// Finish waits for the queued checks and returns the report.
func (s *Stream) Finish() (*AllReport, error) {
	s.Wait()
	return s.v.finish(s.rep, s.rng, s.rng.End())
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

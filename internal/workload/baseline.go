package workload

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// Baseline is the signature work of a set of envelopes, parsed ahead: the
// machine's raw verification cost of exactly those records, the baseline
// that throughput is reported against.
type Baseline struct {
	jobs    []job
	records int
}

type job struct {
	v        keys.Verifier
	msg, sig []byte
}

// NewBaseline parses the envelopes and their signers' keys (from c).
func NewBaseline(c *consortium.Consortium, envs [][]byte) *Baseline {
	byID := map[string]*pb.PublicKey{}
	for _, m := range c.Members {
		for _, k := range m.Participant.GetKeys() {
			byID[k.GetKeyId()] = k
		}
	}
	return NewBaselineKeys(byID, envs)
}

// NewBaselineKeys is NewBaseline with the signers' keys by key id (a
// registry's, for a ledger built elsewhere).
func NewBaselineKeys(byID map[string]*pb.PublicKey, envs [][]byte) *Baseline {
	var cache keys.Cache
	b := &Baseline{records: len(envs)}
	for _, raw := range envs {
		env := new(pb.Envelope)
		if err := proto.Unmarshal(raw, env); err != nil {
			panic("workload: baseline of a malformed envelope")
		}
		pae := dsse.PAE(env.GetPayloadType(), env.GetPayload())
		for _, s := range env.GetSignatures() {
			k := byID[s.GetKeyid()]
			scheme := keys.Ed25519
			if k.GetScheme() == pb.KeyScheme_KEY_SCHEME_ML_DSA_65 {
				scheme = keys.MLDSA65
			}
			v, err := cache.Verifier(scheme, k.GetPublicKey())
			if err != nil {
				panic(err)
			}
			b.jobs = append(b.jobs, job{v, pae, s.GetSig()})
		}
	}
	return b
}

// Run verifies every signature on GOMAXPROCS goroutines and returns how long
// it took. It panics on a signature that does not verify.
func (b *Baseline) Run() time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(b.jobs)); i = next.Add(1) - 1 {
				if !b.jobs[i].v.Verify(b.jobs[i].msg, b.jobs[i].sig) {
					panic("workload: a baseline signature does not verify")
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// Rate runs the baseline and returns records verified per second.
func (b *Baseline) Rate() float64 { return float64(b.records) / b.Run().Seconds() }

// SignaturesPerRecord is the baseline's signatures per envelope (1 for
// Ed25519 or ML-DSA-65, 2 for hybrid, between for a mix).
func (b *Baseline) SignaturesPerRecord() float64 { return float64(len(b.jobs)) / float64(b.records) }

// Verify checks one signature of the baseline (i modulo its size): the unit
// of work of a parallel verify benchmark.
func (b *Baseline) Verify(i int) bool {
	j := b.jobs[i%len(b.jobs)]
	return j.v.Verify(j.msg, j.sig)
}

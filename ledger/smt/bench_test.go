package smt

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// BenchmarkProofs builds a tree of n keys (1,000,000; 10,000,000 too with
// GPULEDGER_BENCH_SMT_10M) in memory, in batches of 10,000, and reports the
// encoded size of proofs (mean and largest, of inclusion and of absence),
// the time to verify one, and the p99 of producing one from the store.
func BenchmarkProofs(b *testing.B) {
	sizes := []int{1_000_000}
	if os.Getenv("GPULEDGER_BENCH_SMT_10M") != "" {
		sizes = append(sizes, 10_000_000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := MemStore{}
			var root Hash
			for start := 0; start < n; start += 10_000 {
				us := make([]Update, 0, 10_000)
				for i := start; i < min(n, start+10_000); i++ {
					us = append(us, Update{Key: key(i), Value: val(i, 0)})
				}
				var err error
				if root, err = Apply(s, us); err != nil {
					b.Fatal(err)
				}
			}
			var total, largest, count int
			var gen []time.Duration
			var verifying time.Duration
			i := 0
			for b.Loop() {
				k := key(i % (2 * n)) // half present, half absent
				i += 7919
				t0 := time.Now()
				v, p, err := Prove(s, k)
				gen = append(gen, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				enc, _ := p.Marshal()
				total, largest, count = total+len(enc), max(largest, len(enc)), count+1
				t1 := time.Now()
				if err := Verify(root, k, v, p); err != nil {
					b.Fatal(err)
				}
				verifying += time.Since(t1)
			}
			slices.Sort(gen)
			b.ReportMetric(float64(total)/float64(count), "proof-B-mean")
			b.ReportMetric(float64(largest), "proof-B-max")
			b.ReportMetric(float64(verifying.Nanoseconds())/float64(count)/1000, "verify-µs")
			b.ReportMetric(float64(gen[len(gen)*99/100].Nanoseconds())/1000, "prove-p99-µs")
		})
	}
}

package ledger

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// BenchmarkStorageCeiling writes what Apply writes for a batch of 256
// records — entry, hash index, history index, two Merkle hashes and a serial
// state per record — straight to badger with the ledger's options, durable,
// with no validation, hashing or signatures: the storage path's ceiling, to
// read Apply's figures against. Envelope sizes are those of Ed25519 and
// ML-DSA-65 records.
func BenchmarkStorageCeiling(b *testing.B) {
	for _, size := range []int{340, 3620} {
		b.Run(fmt.Sprintf("envelope=%dB", size), func(b *testing.B) {
			cfg := DefaultConfig(b.TempDir())
			cfg.Logger = slog.New(slog.DiscardHandler)
			db, err := badger.Open(badgerOptions(cfg))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			env := make([]byte, size)
			rand.Read(env)
			state := make([]byte, 260)
			const batch = 256
			var n uint64
			start := time.Now()
			for b.Loop() {
				txn := db.NewTransaction(true)
				for range batch {
					h := sha256.Sum256(append(env[:8:8], byte(n), byte(n>>8), byte(n>>16)))
					serial := fmt.Sprintf("S-%07d", n/8)
					for _, kv := range [][2][]byte{
						{entryKey(n), env}, {hashKey(h[:]), be64(n)}, {historyKey(serial, n%8), be64(n)},
						{treeKey(int64(2 * n)), h[:]}, {treeKey(int64(2*n + 1)), h[:]}, {serialKey(serial), state},
					} {
						if err := txn.Set(kv[0], kv[1]); err != nil {
							b.Fatal(err)
						}
					}
					n++
				}
				if err := txn.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
		})
	}
}

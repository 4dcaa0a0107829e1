package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
)

func FuzzDecodeEnvelope(f *testing.F) {
	for _, env := range workload.New(testConsortium, 1, t0).Lifecycle("FUZZ-1", 1) {
		f.Add(env)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, raw []byte) {
		env, rej := ledger.DecodeEnvelope(raw)
		if rej != nil {
			if rej.Code == 0 || rej.Reason == "" || rej.Msg == "" {
				t.Fatalf("rejection without code, reason or message: %+v", rej)
			}
			return
		}
		again, err := dsse.Marshal(env)
		if err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("accepted an envelope that is not canonical: %x", raw)
		}
	})
}

// fuzzPool is a fixed set of envelopes that FuzzApply draws from: whole valid
// lifecycles, so that fuzzed orders and batchings exercise every rule.
var fuzzPool = func() [][]byte {
	g := workload.New(testConsortium, 2, t0)
	var pool [][]byte
	for _, s := range []string{"FZ-A", "FZ-B", "FZ-C"} {
		pool = append(pool, g.Lifecycle(s, 2)...)
	}
	return pool
}()

// FuzzApply applies batches chosen, ordered, split and corrupted by the fuzzer.
// It must never panic, never fail for anything but storage, and the root must
// always equal a naive RFC 6962 root over the stored entries.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 255, 8, 9, 10})
	f.Add([]byte{3, 2, 1, 0, 254, 0, 17, 5, 253, 9})
	f.Add([]byte{0, 0, 0, 255, 1, 1, 252, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			return
		}
		cfg := ledger.DefaultConfig("")
		cfg.Genesis, cfg.NodeSigner = testConsortium.Genesis, testConsortium.NodeSigner
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.SyncWrites, cfg.InMemory, cfg.MaxBatchBytes = false, true, 2<<20
		l, err := ledger.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var batch [][]byte
		at := t0.Add(30 * 24 * time.Hour)
		flush := func() {
			rs, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: batch})
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			for _, r := range rs {
				var rej *custody.Error
				if r.Err != nil && !errors.As(r.Err, &rej) {
					t.Fatalf("untyped rejection %v", r.Err)
				}
			}
			batch = nil
			at = at.Add(time.Minute)
		}
		for i := 0; i < len(ops); i++ {
			switch op := ops[i]; {
			case op == 255:
				flush()
			case op >= 250 && i+2 < len(ops): // corrupt a byte of the next envelope
				env := bytes.Clone(fuzzPool[int(ops[i+1])%len(fuzzPool)])
				env[int(ops[i+2])%len(env)] ^= op
				batch = append(batch, env)
				i += 2
			default:
				batch = append(batch, fuzzPool[int(op)%len(fuzzPool)])
			}
		}
		flush()
		var leaves [][]byte
		if err := l.Entries(context.Background(), 0, l.Size(), func(e *pb.Entry) error {
			leaves = append(leaves, leafHash(e))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		root := l.Root()
		if uint64(len(leaves)) != l.Size() || !bytes.Equal(referenceRoot(leaves), root[:]) {
			t.Fatalf("root %x over %d entries; naive root %x over %d", root, l.Size(), referenceRoot(leaves), len(leaves))
		}
	})
}

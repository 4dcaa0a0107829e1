package verify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/tlog"
)

// TrustStore keeps, per ledger, the last checkpoint this client verified:
// one file, Dir/<ledger id>.checkpoint, holding the signed note. Every later
// verification must show the node's history extends it.
type TrustStore struct {
	Dir string
}

// DefaultTrustDir is $GPULEDGER_TRUST_DIR, else the user's config
// directory's gpuledger/trust.
func DefaultTrustDir() string {
	if d := os.Getenv("GPULEDGER_TRUST_DIR"); d != "" {
		return d
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "gpuledger", "trust")
	}
	return filepath.Join(".gpuledger", "trust")
}

func (s TrustStore) path(origin string) string {
	return filepath.Join(s.Dir, strings.TrimPrefix(origin, "gpuledger/")+".checkpoint")
}

// AuditDir is where verify --all keeps its audit store for the ledger of
// origin (ledger.AuditStore): Dir/<ledger id>.audit.
func (s TrustStore) AuditDir(origin string) string {
	return filepath.Join(s.Dir, strings.TrimPrefix(origin, "gpuledger/")+".audit")
}

// ForkError means a node showed a history that does not extend a checkpoint
// verified before: someone rewrote or forked the log.
type ForkError struct {
	Trusted, Shown *Checkpoint
	Why            string
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("FORK: the node's checkpoint (size %d, root %x) does not extend the one verified before (size %d, root %x): %s",
		e.Shown.Size, e.Shown.Root[:], e.Trusted.Size, e.Trusted.Root[:], e.Why)
}

// Advance checks that cp extends the trusted checkpoint (with a consistency
// proof from the node, checked here) and then trusts cp. With no trusted
// checkpoint yet it trusts cp on first use. It returns the checkpoint trusted
// before, or nil.
func (v *Verifier) Advance(ctx context.Context, c *Client, store TrustStore, cp *Checkpoint) (*Checkpoint, error) {
	old, err := v.Trusted(store)
	if err != nil {
		return nil, err
	}
	if old != nil {
		switch {
		case cp.Size < old.Size:
			return old, &ForkError{old, cp, "it is shorter"}
		case cp.Size == old.Size && cp.Root != old.Root:
			return old, &ForkError{old, cp, "same size, different root"}
		case cp.Size > old.Size:
			r, err := c.Audit.GetConsistencyProof(atLeast(ctx, cp.Size), &pb.GetConsistencyProofRequest{OldSize: old.Size, NewSize: cp.Size})
			if err != nil {
				return old, fmt.Errorf("consistency proof from %d to %d: %w", old.Size, cp.Size, err)
			}
			proof, ok := treeProof(r.GetProof().GetHashes())
			if !ok {
				return old, &ForkError{old, cp, "malformed consistency proof"}
			}
			if err := tlog.CheckTree(proof, int64(cp.Size), cp.Root, int64(old.Size), old.Root); err != nil {
				return old, &ForkError{old, cp, "the consistency proof fails: " + err.Error()}
			}
		}
	}
	if err := os.MkdirAll(store.Dir, 0o700); err != nil {
		return old, fmt.Errorf("trust store: %w", err)
	}
	tmp := store.path(v.origin) + ".tmp"
	if err := os.WriteFile(tmp, []byte(cp.Note), 0o600); err != nil {
		return old, fmt.Errorf("trust store: %w", err)
	}
	if err := os.Rename(tmp, store.path(v.origin)); err != nil {
		return old, fmt.Errorf("trust store: %w", err)
	}
	return old, nil
}

// Trusted returns the trusted checkpoint of this ledger, or nil.
func (v *Verifier) Trusted(store TrustStore) (*Checkpoint, error) {
	b, err := os.ReadFile(store.path(v.origin))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	// It was verified when it was stored, under whatever signer count that
	// run asked for; what is checked now is that it is this ledger's, signed
	// by one of its nodes at least. MinSigners applies to new checkpoints.
	one := *v
	one.MinSigners = 1
	cp, err := one.Checkpoint(string(b))
	if err != nil {
		return nil, fmt.Errorf("trust store %s holds a checkpoint that does not verify: %w", store.path(v.origin), err)
	}
	return cp, nil
}

// treeProof converts a consistency proof's hashes, or reports that one is
// not a hash.
func treeProof(hashes [][]byte) (tlog.TreeProof, bool) {
	proof := make(tlog.TreeProof, len(hashes))
	for i, h := range hashes {
		if len(h) != tlog.HashSize {
			return nil, false
		}
		proof[i] = tlog.Hash(h)
	}
	return proof, true
}

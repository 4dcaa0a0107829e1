package verify

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"google.golang.org/grpc/metadata"
	"slices"
	"strconv"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/tlog"
)

// ReceiptError is a receipt that does not prove what it says.
type ReceiptError struct{ Reason string }

func (e *ReceiptError) Error() string { return "the node's receipt does not verify: " + e.Reason }

// Receipts checks the receipts a node gave for envelopes this client sent,
// trusting only the genesis and the trust store: the entry hash is the
// SHA-256 of the envelope's wire form, computed here; the leaf hash follows
// from it, the index and the time; the checkpoint carries enough valid node
// signatures for this ledger; the inclusion proof leads from the leaf to the
// checkpoint's root; and the checkpoint is consistent with the trusted one
// (the store then trusts the newer of the two). envs[i] is the envelope of
// receipts[i]; a nil receipt (a rejected envelope) is skipped.
func (v *Verifier) Receipts(ctx context.Context, c *Client, store *TrustStore, envs []*pb.Envelope, receipts []*pb.Receipt) error {
	checked := make(map[string]*Checkpoint)
	var newest *Checkpoint
	for i, r := range receipts {
		if r == nil {
			continue
		}
		raw, err := dsse.Marshal(envs[i])
		if err != nil {
			return err
		}
		eh := sha256.Sum256(raw)
		if !bytes.Equal(r.GetEntryHash(), eh[:]) {
			return &ReceiptError{fmt.Sprintf("it names entry hash %x, and the envelope sent hashes to %x", r.GetEntryHash(), eh)}
		}
		lh := ledger.LeafHash(r.GetIndex(), r.GetAcceptedAt().AsTime().UnixNano(), eh)
		if !bytes.Equal(r.GetLeafHash(), lh[:]) {
			return &ReceiptError{fmt.Sprintf("its leaf hash %x is not the leaf of entry %d (%x)", r.GetLeafHash(), r.GetIndex(), lh)}
		}
		note := r.GetCheckpoint().GetNote()
		cp, ok := checked[note]
		if !ok {
			if cp, err = v.checkpointOf(ctx, c, note); err != nil {
				return &ReceiptError{"its checkpoint: " + err.Error()}
			}
			checked[note] = cp
		}
		p := r.GetInclusionProof()
		if p.GetLeafIndex() != r.GetIndex() || p.GetTreeSize() != cp.Size {
			return &ReceiptError{fmt.Sprintf("its inclusion proof is for entry %d of a tree of %d, not entry %d of the checkpoint's %d", p.GetLeafIndex(), p.GetTreeSize(), r.GetIndex(), cp.Size)}
		}
		hs := make(tlog.RecordProof, len(p.GetHashes()))
		for j, h := range p.GetHashes() {
			if len(h) != tlog.HashSize {
				return &ReceiptError{fmt.Sprintf("inclusion proof hash %d has %d bytes", j, len(h))}
			}
			hs[j] = tlog.Hash(h)
		}
		if err := tlog.CheckRecord(hs, int64(cp.Size), cp.Root, int64(r.GetIndex()), lh); err != nil {
			return &ReceiptError{fmt.Sprintf("entry %d is not included in its checkpoint of size %d: %v", r.GetIndex(), cp.Size, err)}
		}
		if newest == nil || cp.Size > newest.Size {
			newest = cp
		}
	}
	if newest == nil || store == nil {
		return nil
	}
	// Consistency with what this client trusts, smallest first: each
	// checkpoint is the trusted one's extension (and then trusted) or its
	// prefix.
	cps := make([]*Checkpoint, 0, len(checked))
	for _, cp := range checked {
		cps = append(cps, cp)
	}
	slices.SortFunc(cps, func(a, b *Checkpoint) int { return cmp.Compare(a.Size, b.Size) })
	for _, cp := range cps {
		if err := v.consistent(ctx, c, *store, cp); err != nil {
			return err
		}
	}
	return nil
}

// consistent checks that cp and the trusted checkpoint are one history, and
// trusts cp when it is the newer.
func (v *Verifier) consistent(ctx context.Context, c *Client, store TrustStore, cp *Checkpoint) error {
	old, err := v.Trusted(store)
	if err != nil {
		return err
	}
	if old == nil || cp.Size >= old.Size {
		if _, err := v.Advance(ctx, c, store, cp); err != nil {
			return &ReceiptError{err.Error()}
		}
		return nil
	}
	// Older than the trusted checkpoint (another node, a little behind):
	// it must be a prefix of it.
	r, err := c.Audit.GetConsistencyProof(atLeast(ctx, old.Size), &pb.GetConsistencyProofRequest{OldSize: cp.Size, NewSize: old.Size})
	if err != nil {
		return fmt.Errorf("consistency proof from %d to %d: %w", cp.Size, old.Size, err)
	}
	proof, ok := treeProof(r.GetProof().GetHashes())
	if !ok {
		return &ReceiptError{"malformed consistency proof"}
	}
	if err := tlog.CheckTree(proof, int64(old.Size), old.Root, int64(cp.Size), cp.Root); err != nil {
		return &ReceiptError{(&ForkError{old, cp, "the receipt's checkpoint is not a prefix of the trusted one: " + err.Error()}).Error()}
	}
	return nil
}

// atLeast asks the node to answer once it has applied size entries (the
// gpuledger-min-index header): a follower a moment behind the leader that
// signed a receipt's checkpoint waits for it rather than fail.
func atLeast(ctx context.Context, size uint64) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "gpuledger-min-index", strconv.FormatUint(size, 10))
}

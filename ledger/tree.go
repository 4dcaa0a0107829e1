package ledger

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"github.com/gpuledger/gpuledger/ledger/smt"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"
)

// CheckpointBody formats a C2SP tlog-checkpoint body.
func CheckpointBody(origin string, size uint64, root tlog.Hash) string {
	return origin + "\n" + strconv.FormatUint(size, 10) + "\n" + base64.StdEncoding.EncodeToString(root[:]) + "\n"
}

// MapLinePrefix starts the checkpoint extension line that carries the
// serial map's root: "serial-map <base64 root>".
const MapLinePrefix = "serial-map "

// CheckpointBodyMap is CheckpointBody with the serial map's root as an
// extension line, which C2SP tlog-checkpoint readers that do not know it
// ignore.
func CheckpointBodyMap(origin string, size uint64, root tlog.Hash, mapRoot smt.Hash) string {
	return CheckpointBody(origin, size, root) + MapLinePrefix + base64.StdEncoding.EncodeToString(mapRoot[:]) + "\n"
}

// CheckpointMapRoot returns the serial map's root a checkpoint body
// carries, or false when it carries none; a malformed or repeated line is
// an error.
func CheckpointMapRoot(text string) (smt.Hash, bool, error) {
	var root smt.Hash
	found := false
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for _, l := range lines[min(3, len(lines)):] {
		v, ok := strings.CutPrefix(l, MapLinePrefix)
		if !ok {
			continue
		}
		h, err := base64.StdEncoding.Strict().DecodeString(v)
		if err != nil || len(h) != smt.HashSize || base64.StdEncoding.EncodeToString(h) != v || found {
			return root, false, fmt.Errorf("checkpoint: a malformed or repeated %q line", strings.TrimSpace(MapLinePrefix))
		}
		copy(root[:], h)
		found = true
	}
	return root, found, nil
}

// ParseCheckpointBody parses a C2SP tlog-checkpoint body (extension lines are
// allowed and ignored), insisting on canonical numbers and base64.
func ParseCheckpointBody(text string) (origin string, size uint64, root tlog.Hash, err error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) < 4 || !strings.HasSuffix(text, "\n") {
		return "", 0, root, fmt.Errorf("checkpoint: want origin, size and root lines")
	}
	origin = strings.TrimSuffix(lines[0], "\n")
	sizeText := strings.TrimSuffix(lines[1], "\n")
	size, err = strconv.ParseUint(sizeText, 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != sizeText {
		return "", 0, root, fmt.Errorf("checkpoint: size %q is not a canonical decimal", sizeText)
	}
	h, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSuffix(lines[2], "\n"))
	if err != nil || len(h) != tlog.HashSize {
		return "", 0, root, fmt.Errorf("checkpoint: root is not a base64 SHA-256 hash")
	}
	copy(root[:], h)
	return origin, size, root, nil
}

// Checkpoint returns a checkpoint of the whole log signed by this node.
// Ed25519 signatures are deterministic, so a node signs each size once and
// returns the same note until the log grows.
func (l *Ledger) Checkpoint(ctx context.Context) (*pb.Checkpoint, error) {
	if l.cfg.NodeSigner == nil {
		return nil, ErrNoSigner
	}
	v := l.view.Load()
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	if l.cp != nil && l.cp.GetSize() >= v.size {
		return proto.Clone(l.cp).(*pb.Checkpoint), nil
	}
	body := CheckpointBody(l.origin, v.size, v.root)
	var mapRoot []byte
	if v.hasMap {
		m, err := l.signedMapRoot(v.mapRoot)
		if err != nil {
			return nil, err
		}
		body, mapRoot = CheckpointBodyMap(l.origin, v.size, v.root, m), bytes.Clone(m[:])
	}
	msg, err := note.Sign(&note.Note{Text: body}, l.cfg.NodeSigner)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	l.cp = &pb.Checkpoint{Note: string(msg), Origin: l.origin, Size: v.size, RootHash: bytes.Clone(v.root[:]), MapRoot: mapRoot}
	return proto.Clone(l.cp).(*pb.Checkpoint), nil
}

// TreeHash returns the Merkle tree hash of the first size entries.
func (l *Ledger) TreeHash(ctx context.Context, size uint64) (tlog.Hash, error) {
	v := l.view.Load()
	if size > v.size {
		return tlog.Hash{}, fmt.Errorf("tree size %d is beyond the log's %d: %w", size, v.size, ErrInvalidArgument)
	}
	if size == v.size {
		return v.root, nil
	}
	var h tlog.Hash
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		h, err = tlog.TreeHash(int64(size), &hashReader{txn: txn})
		return err
	})
	return h, err
}

// InclusionProof proves entry index is in the tree of size entries.
func (l *Ledger) InclusionProof(ctx context.Context, index, size uint64) (*pb.InclusionProof, error) {
	if size > l.Size() || index >= size {
		return nil, fmt.Errorf("inclusion of entry %d in tree size %d (log size %d): %w", index, size, l.Size(), ErrInvalidArgument)
	}
	var p tlog.RecordProof
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		p, err = tlog.ProveRecord(int64(size), int64(index), &hashReader{txn: txn})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	return &pb.InclusionProof{LeafIndex: index, TreeSize: size, Hashes: hashList(p)}, nil
}

// ConsistencyProof proves the tree of oldSize entries is a prefix of the tree
// of newSize entries.
func (l *Ledger) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) (*pb.ConsistencyProof, error) {
	if newSize > l.Size() || oldSize > newSize {
		return nil, fmt.Errorf("consistency from %d to %d (log size %d): %w", oldSize, newSize, l.Size(), ErrInvalidArgument)
	}
	out := &pb.ConsistencyProof{OldSize: oldSize, NewSize: newSize}
	if oldSize == 0 || oldSize == newSize {
		return out, nil
	}
	var p tlog.TreeProof
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		p, err = tlog.ProveTree(int64(newSize), int64(oldSize), &hashReader{txn: txn})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consistency proof: %w", err)
	}
	out.Hashes = hashList(p)
	return out, nil
}

func hashList(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = bytes.Clone(hs[i][:])
	}
	return out
}

// InclusionProofs proves several entries against one tree size, reading each
// Merkle hash once however many proofs share it (a batch's receipts share
// most of their paths).
func (l *Ledger) InclusionProofs(ctx context.Context, indexes []uint64, size uint64) ([]*pb.InclusionProof, error) {
	if size > l.Size() {
		return nil, fmt.Errorf("tree size %d is beyond the log's %d: %w", size, l.Size(), ErrInvalidArgument)
	}
	out := make([]*pb.InclusionProof, len(indexes))
	err := l.db.View(func(txn *badger.Txn) error {
		r := &cachedReader{r: &hashReader{txn: txn}, m: make(map[int64]tlog.Hash)}
		for i, idx := range indexes {
			if idx >= size {
				return fmt.Errorf("inclusion of entry %d in tree size %d: %w", idx, size, ErrInvalidArgument)
			}
			p, err := tlog.ProveRecord(int64(size), int64(idx), r)
			if err != nil {
				return fmt.Errorf("inclusion proof: %w", err)
			}
			out[i] = &pb.InclusionProof{LeafIndex: idx, TreeSize: size, Hashes: hashList(p)}
		}
		return nil
	})
	return out, err
}

// cachedReader remembers the hashes it has read.
type cachedReader struct {
	r tlog.HashReader
	m map[int64]tlog.Hash
}

func (c *cachedReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var missing []int64
	for i, idx := range indexes {
		h, ok := c.m[idx]
		if !ok {
			missing = append(missing, idx)
			continue
		}
		out[i] = h
	}
	if len(missing) > 0 {
		hs, err := c.r.ReadHashes(missing)
		if err != nil {
			return nil, err
		}
		for i, idx := range missing {
			c.m[idx] = hs[i]
		}
		for i, idx := range indexes {
			out[i] = c.m[idx]
		}
	}
	return out, nil
}

// signedMapRoot is the map root a checkpoint signs: m, or with StaleMap
// (a lying node, for tests) the root of StaleMapSize.
func (l *Ledger) signedMapRoot(m smt.Hash) (smt.Hash, error) {
	if !l.cfg.StaleMap {
		return m, nil
	}
	return l.MapRoot(l.cfg.StaleMapSize)
}

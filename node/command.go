package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Raft commands carry a type byte, then the payload:
//
//	cmdBatch:        int64be(accepted_at Unix ns) uvarint(n) n × (uvarint(len) envelope)
//	cmdCheckedBatch: uint64be(raft index) uint64be(size) root[32], then as cmdBatch
//	cmdMapBatch:     as cmdCheckedBatch, then map_root[32], then as cmdBatch
//
// A checked batch carries the proposer's state after the last batch it had
// applied (its raft index, log size and Merkle root, and with the map its
// serial map's root), for followers to compare with their own (see
// fsm.Apply): the map root like the log root. Nodes write map batches (or
// checked batches, from a store without the map); they read all three.
const (
	cmdBatch        byte = 1
	cmdCheckedBatch byte = 2
	cmdMapBatch     byte = 3
)

// batchState is a node's log after applying the batch at a raft index.
type batchState struct {
	index, size uint64
	root        tlog.Hash
	mapRoot     [32]byte
	hasMap      bool
}

// checkBytes is the length of a command's check: 48 bytes, 80 with the map.
func checkBytes(typ byte) int {
	if typ == cmdMapBatch {
		return 80
	}
	return 48
}

func encodeBatch(at time.Time, check batchState, envs [][]byte) []byte {
	size := 1 + 80 + 8 + binary.MaxVarintLen64
	for _, e := range envs {
		size += binary.MaxVarintLen64 + len(e)
	}
	b := make([]byte, 0, size)
	typ := cmdCheckedBatch
	if check.hasMap {
		typ = cmdMapBatch
	}
	b = append(b, typ)
	b = binary.BigEndian.AppendUint64(b, check.index)
	b = binary.BigEndian.AppendUint64(b, check.size)
	b = append(b, check.root[:]...)
	if check.hasMap {
		b = append(b, check.mapRoot[:]...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(envs)))
	for _, e := range envs {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return b
}

var errBadCommand = errors.New("malformed raft command")

// batchTime reads a batch command's acceptance time alone (eight bytes at a
// fixed offset), for the followers' check of the leader's clock.
func batchTime(b []byte) (time.Time, bool) {
	off := 1
	switch {
	case len(b) >= 1 && (b[0] == cmdCheckedBatch || b[0] == cmdMapBatch) && len(b) >= 1+checkBytes(b[0])+8:
		off += checkBytes(b[0])
	case len(b) >= 1+8 && b[0] == cmdBatch:
	default:
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[off:off+8]))).UTC(), true
}

// decodeBatch decodes a batch command; check is zero for an unchecked one.
func decodeBatch(b []byte) (time.Time, batchState, [][]byte, error) {
	var check batchState
	switch {
	case len(b) >= 1 && (b[0] == cmdCheckedBatch || b[0] == cmdMapBatch) && len(b) >= 1+checkBytes(b[0]):
		check.index = binary.BigEndian.Uint64(b[1:9])
		check.size = binary.BigEndian.Uint64(b[9:17])
		copy(check.root[:], b[17:49])
		if b[0] == cmdMapBatch {
			copy(check.mapRoot[:], b[49:81])
			check.hasMap = true
		}
		b = b[checkBytes(b[0]):]
	case len(b) >= 1 && b[0] == cmdBatch:
	default:
		return time.Time{}, check, nil, fmt.Errorf("%w: type %x", errBadCommand, b[:min(1, len(b))])
	}
	if len(b) < 9 {
		return time.Time{}, check, nil, fmt.Errorf("%w: too short", errBadCommand)
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))).UTC()
	b = b[9:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return time.Time{}, check, nil, fmt.Errorf("%w: count", errBadCommand)
	}
	b = b[k:]
	envs := make([][]byte, 0, n)
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return time.Time{}, check, nil, fmt.Errorf("%w: envelope length", errBadCommand)
		}
		envs = append(envs, b[k:k+int(l)])
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return time.Time{}, check, nil, fmt.Errorf("%w: %d trailing bytes", errBadCommand, len(b))
	}
	return at, check, envs, nil
}

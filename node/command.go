package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Raft commands carry a type byte, then the payload:
//
//	cmdBatch: int64be(accepted_at Unix ns) uvarint(n) n × (uvarint(len) envelope)
const cmdBatch byte = 1

func encodeBatch(at time.Time, envs [][]byte) []byte {
	size := 1 + 8 + binary.MaxVarintLen64
	for _, e := range envs {
		size += binary.MaxVarintLen64 + len(e)
	}
	b := make([]byte, 0, size)
	b = append(b, cmdBatch)
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(envs)))
	for _, e := range envs {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return b
}

var errBadCommand = errors.New("malformed raft command")

func decodeBatch(b []byte) (time.Time, [][]byte, error) {
	if len(b) < 9 || b[0] != cmdBatch {
		return time.Time{}, nil, fmt.Errorf("%w: type %x", errBadCommand, b[:min(1, len(b))])
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))).UTC()
	b = b[9:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return time.Time{}, nil, fmt.Errorf("%w: count", errBadCommand)
	}
	b = b[k:]
	envs := make([][]byte, 0, n)
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return time.Time{}, nil, fmt.Errorf("%w: envelope length", errBadCommand)
		}
		envs = append(envs, b[k:k+int(l)])
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return time.Time{}, nil, fmt.Errorf("%w: %d trailing bytes", errBadCommand, len(b))
	}
	return at, envs, nil
}

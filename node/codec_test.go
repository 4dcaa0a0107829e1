package node_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// rawCodec sends pre-encoded request bytes as they are, and decodes
// responses as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}
func (rawCodec) Name() string { return "proto" }

// reorder re-encodes an envelope with its fields in reverse order: the same
// message, not its canonical bytes.
func reorder(t *testing.T, canonical []byte) []byte {
	var fields [][]byte
	for b := canonical; len(b) > 0; {
		_, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(0, typ, b[n:])
		if n < 0 || m < 0 {
			t.Fatal("bad envelope")
		}
		fields = append(fields, b[:n+m])
		b = b[n+m:]
	}
	var out []byte
	for i := len(fields) - 1; i >= 0; i-- {
		out = append(out, fields[i]...)
	}
	return out
}

// first is the length of an encoding's first field.
func first(b []byte) int {
	_, typ, n := protowire.ConsumeTag(b)
	return n + protowire.ConsumeFieldValue(0, typ, b[n:])
}

// TestNonCanonicalEnvelope: an envelope whose bytes are not its canonical
// encoding is refused with NOT_CANONICAL, not re-encoded and stored under a
// hash its sender never computed; the canonical bytes are stored under the
// hash of exactly what was sent.
func TestNonCanonicalEnvelope(t *testing.T) {
	tn := startNode(t, t.TempDir())
	env := sign(event("GPU-CANON", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil))
	canonical, err := dsse.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	request := func(envBytes ...[]byte) []byte {
		var b []byte
		for _, e := range envBytes {
			b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), e)
		}
		return b
	}
	call := func(method string, req []byte, resp proto.Message) error {
		return tn.conn.Invoke(t.Context(), method, req, resp, grpc.ForceCodecV2(rawCodec{}))
	}
	reordered := reorder(t, canonical)
	if bytes.Equal(reordered, canonical) {
		t.Fatal("the reordered envelope is the canonical one")
	}
	for name, req := range map[string][]byte{
		"fields out of order": request(reordered),
		"the envelope twice":  request(canonical[:first(canonical)], canonical[first(canonical):]),
	} {
		err := call("/gpuledger.v1.LedgerService/Append", req, new(pb.AppendResponse))
		if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "NOT_CANONICAL" {
			t.Errorf("%s: Append = %v (reason %s); want INVALID_ARGUMENT NOT_CANONICAL", name, err, reasonOf(err))
		}
	}
	var batch pb.AppendBatchResponse
	if err := call("/gpuledger.v1.LedgerService/AppendBatch", request(reordered), &batch); err != nil ||
		batch.GetResults()[0].GetError().GetReason() != "NOT_CANONICAL" {
		t.Errorf("AppendBatch of a reordered envelope = %v, %v; want its result NOT_CANONICAL", &batch, err)
	}
	if s := tn.n.Ledger().Size(); s != 0 {
		t.Fatalf("refused envelopes changed the log: size %d", s)
	}
	var ok pb.AppendResponse
	if err := call("/gpuledger.v1.LedgerService/Append", request(canonical), &ok); err != nil {
		t.Fatalf("the canonical envelope: %v", err)
	}
	if h := sha256.Sum256(canonical); !bytes.Equal(ok.GetReceipt().GetEntryHash(), h[:]) {
		t.Fatalf("receipt entry hash %x; want SHA-256 of the bytes sent, %x", ok.GetReceipt().GetEntryHash(), h)
	}
}

package node

import (
	"bytes"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// canonicalCodec is the server's protobuf codec. It decodes as gRPC's own
// does, and keeps one fact the decoded message loses: whether each envelope
// of an Append or AppendBatch request arrived in its canonical (deterministic)
// encoding. The entry hash is SHA-256 of the canonical bytes, so a client that
// sent other bytes (fields out of order, a field twice, non-minimal varints)
// and hashed what it sent would chain on a hash the ledger never stored. Such
// an envelope is marked with an unknown field, which the ledger's canonical
// check refuses with NOT_CANONICAL, rather than silently re-encoded.
type canonicalCodec struct{ encoding.CodecV2 }

func newCanonicalCodec() canonicalCodec {
	return canonicalCodec{encoding.GetCodecV2("proto")}
}

// notCanonicalMark is the unknown field that marks an envelope whose bytes
// were not canonical: field 2047, varint 1. No gpuledger message uses it.
var notCanonicalMark = protowire.AppendVarint(protowire.AppendTag(nil, 2047, protowire.VarintType), 1)

func (c canonicalCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v.(type) {
	case *pb.AppendRequest, *pb.AppendBatchRequest:
	default:
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	raw := buf.ReadOnlyData()
	m := v.(proto.Message)
	if err := proto.Unmarshal(raw, m); err != nil {
		return err
	}
	var envs []*pb.Envelope
	switch r := v.(type) {
	case *pb.AppendRequest:
		if r.GetEnvelope() != nil {
			envs = []*pb.Envelope{r.GetEnvelope()}
		}
	case *pb.AppendBatchRequest:
		envs = r.GetEnvelopes()
	}
	sent := envelopeBytes(raw)
	for i, env := range envs {
		if i >= len(sent) || len(sent) != len(envs) || !canonicalEnvelope(env, sent[i]) {
			env.ProtoReflect().SetUnknown(append(env.ProtoReflect().GetUnknown(), notCanonicalMark...))
		}
	}
	return nil
}

// envelopeBytes returns the bytes of each occurrence of field 1 (the
// envelope or envelopes) of a request, in order; nil when the request does
// not parse as protobuf fields.
func envelopeBytes(raw []byte) [][]byte {
	var out [][]byte
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return nil
		}
		raw = raw[n:]
		if num == 1 && typ == protowire.BytesType {
			b, m := protowire.ConsumeBytes(raw)
			if m < 0 {
				return nil
			}
			out = append(out, b)
			raw = raw[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, raw)
		if m < 0 {
			return nil
		}
		raw = raw[m:]
	}
	return out
}

func canonicalEnvelope(env *pb.Envelope, sent []byte) bool {
	b, err := dsse.Marshal(env)
	return err == nil && bytes.Equal(b, sent)
}

package node

import (
	"bytes"
	"fmt"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/grpc/codes"
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

// undecodableMark is the unknown field (2046, bytes: the parse error) that
// marks a request the codec could not decode. gRPC answers a codec error with
// INTERNAL, as if the server had failed; the request is at fault, so the codec
// hands on an empty message so marked and the interceptors (undecodable)
// answer INVALID_ARGUMENT with an ErrorInfo instead.
const undecodableField = 2046

// preEncoded is a message the server sends already in its wire encoding
// (streamStored builds StreamEntries' messages from the stored entries).
type preEncoded []byte

// Marshal encodes as gRPC's own codec does, and passes a preEncoded message
// through as it is.
func (c canonicalCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func (c canonicalCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	switch v.(type) {
	case *pb.AppendRequest, *pb.AppendBatchRequest:
	default:
		if err := c.CodecV2.Unmarshal(data, v); err != nil {
			markUndecodable(m, err)
		}
		return nil
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	raw := buf.ReadOnlyData()
	if err := proto.Unmarshal(raw, m); err != nil {
		markUndecodable(m, err)
		return nil
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

// markUndecodable empties m and marks it with the reason it did not decode.
func markUndecodable(m proto.Message, err error) {
	proto.Reset(m)
	m.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, undecodableField, protowire.BytesType), []byte(err.Error())))
}

// undecodable returns the INVALID_ARGUMENT error for a request the codec
// marked, or nil.
func undecodable(req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	u := m.ProtoReflect().GetUnknown()
	num, typ, n := protowire.ConsumeTag(u)
	if n < 0 || num != undecodableField || typ != protowire.BytesType {
		return nil
	}
	why, k := protowire.ConsumeBytes(u[n:])
	if k < 0 {
		return nil
	}
	return withInfo(codes.InvalidArgument, ReasonMalformedRequest,
		fmt.Sprintf("the request is not a valid %s message (%s); send protobuf of the method's request type", m.ProtoReflect().Descriptor().FullName(), custody.Quote(string(why))), nil)
}

package node_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
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

// TestUndecodableRequest: bytes that are not the method's protobuf message
// are the client's fault: INVALID_ARGUMENT with reason MALFORMED_REQUEST,
// for unary and streaming methods alike, and nothing is stored.
func TestUndecodableRequest(t *testing.T) {
	tn := startNode(t, t.TempDir())
	junk := [][]byte{
		{0xff, 0xff, 0xff},             // a field tag that never ends
		{0x0a, 0x80},                   // field 1, a length that never ends
		{0x0a, 0x05, 0x01},             // field 1, 5 bytes promised, 1 sent
		{0x0a, 0x03, 0xff, 0xfe, 0xfd}, // field 1 (a string or message in each): neither UTF-8 nor a message
	}
	unary := []string{
		"/gpuledger.v1.LedgerService/Append",
		"/gpuledger.v1.LedgerService/AppendBatch",
		"/gpuledger.v1.LedgerService/GetSerial",
		"/gpuledger.v1.AuditService/VerifySerial",
		"/gpuledger.v1.RegistryService/GetParticipant",
	}
	for _, m := range unary {
		for _, b := range junk {
			err := tn.conn.Invoke(t.Context(), m, b, new(emptypb.Empty), grpc.ForceCodecV2(rawCodec{}))
			if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "MALFORMED_REQUEST" {
				t.Errorf("%s %x: %v (reason %q), want INVALID_ARGUMENT MALFORMED_REQUEST", m, b, err, reasonOf(err))
			}
		}
	}
	for _, m := range []string{"/gpuledger.v1.LedgerService/StreamEntries", "/gpuledger.v1.AuditService/WatchFindings"} {
		s, err := tn.conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true}, m, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(junk[0]); err != nil {
			t.Fatal(err)
		}
		s.CloseSend()
		err = s.RecvMsg(new(pb.StreamEntriesResponse))
		if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "MALFORMED_REQUEST" {
			t.Errorf("%s: %v (reason %q), want INVALID_ARGUMENT MALFORMED_REQUEST", m, err, reasonOf(err))
		}
	}
	if got := tn.n.Size(); got != 0 {
		t.Errorf("the log has %d entries after undecodable requests, want 0", got)
	}
}

// TestErrorsQuoteAPrefix: an error quotes at most a short prefix of the
// client's input, escaped once: a 4 MiB serial of control bytes gives a
// message of a few hundred bytes, which the client receives.
func TestErrorsQuoteAPrefix(t *testing.T) {
	tn := startNode(t, t.TempDir())
	for _, serial := range []string{strings.Repeat("\x01", 4<<20), strings.Repeat("é", 3<<20), strings.Repeat("A", 65)} {
		_, err := tn.lc.GetSerial(t.Context(), &pb.GetSerialRequest{Serial: serial})
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Fatalf("GetSerial of %d bytes: %v, want INVALID_ARGUMENT", len(serial), err)
		}
		if len(st.Message()) > 400 || !strings.Contains(st.Message(), fmt.Sprintf("(%d bytes)", len(serial))) {
			t.Errorf("message of %d bytes for a serial of %d: %.200q", len(st.Message()), len(serial), st.Message())
		}
		if !utf8.ValidString(st.Message()) || strings.ContainsRune(st.Message(), 1) {
			t.Errorf("message is not printable UTF-8: %.200q", st.Message())
		}
	}
}

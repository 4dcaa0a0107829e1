package custody

import (
	"fmt"
	"testing"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// fill sets every field of m, recursively, to a value derived from seed
// (lists get two elements): a state in which a field the copy forgets
// shows.
func fill(m protoreflect.Message, seed int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		n := seed*100 + i + 1
		switch {
		case f.IsList():
			l := m.Mutable(f).List()
			for j := range 2 {
				if f.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					fill(e.Message(), n*10+j)
					l.Append(e)
				} else {
					l.Append(scalar(f, n*10+j))
				}
			}
		case f.Kind() == protoreflect.MessageKind:
			fill(m.Mutable(f).Message(), n)
		default:
			m.Set(f, scalar(f, n))
		}
	}
}

func scalar(f protoreflect.FieldDescriptor, n int) protoreflect.Value {
	switch f.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d", f.Name(), n))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(fmt.Sprintf("%s-%d", f.Name(), n)))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(1 + n%2))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(n))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n))
	}
	panic(fmt.Sprintf("fill: field %s of kind %v", f.FullName(), f.Kind()))
}

// shared names the messages and lists that a and b hold in common (the
// same pointer), which a deep copy never does.
func shared(a, b protoreflect.Message, path string) []string {
	var out []string
	fields := a.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if !a.Has(f) || !b.Has(f) {
			continue
		}
		p := path + "." + string(f.Name())
		switch {
		case f.IsList() && f.Kind() == protoreflect.MessageKind:
			la, lb := a.Get(f).List(), b.Get(f).List()
			for j := range min(la.Len(), lb.Len()) {
				if la.Get(j).Message().Interface() == lb.Get(j).Message().Interface() {
					out = append(out, fmt.Sprintf("%s[%d]", p, j))
				}
				out = append(out, shared(la.Get(j).Message(), lb.Get(j).Message(), fmt.Sprintf("%s[%d]", p, j))...)
			}
		case f.Kind() == protoreflect.MessageKind && !f.IsMap():
			if a.Get(f).Message().Interface() == b.Get(f).Message().Interface() {
				out = append(out, p)
			}
			out = append(out, shared(a.Get(f).Message(), b.Get(f).Message(), p)...)
		}
	}
	return out
}

func TestStateClone(t *testing.T) {
	st := new(pb.SerialState)
	fill(st.ProtoReflect(), 1)
	want := proto.Clone(st).(*pb.SerialState)
	want.OpenFindings = nil
	got := stateWithoutFindings(st)
	if !proto.Equal(want, got) {
		t.Fatalf("the copy differs from proto.Clone (a field not copied?):\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
	}
	if s := shared(st.ProtoReflect(), got.ProtoReflect(), "state"); len(s) > 0 {
		t.Fatalf("the copy shares %v with the original", s)
	}
	got.HeadHash[0] ^= 1
	*got.Location.LatitudeE6 = 0
	if st.HeadHash[0] == got.HeadHash[0] || st.Location.GetLatitudeE6() == 0 {
		t.Fatal("changing the copy changed the original")
	}
	if stateWithoutFindings(nil) != nil {
		t.Fatal("nil copied as a state")
	}
	// Unknown fields (a newer version's) are kept, at every level.
	u := proto.Clone(st).(*pb.SerialState)
	u.OpenShipment.ProtoReflect().SetUnknown(protoreflect.RawFields{0xf8, 0x7f, 0x01}) // field 2047, varint 1
	u.ProtoReflect().SetUnknown(protoreflect.RawFields{0xf8, 0x7f, 0x02})
	want = proto.Clone(u).(*pb.SerialState)
	want.OpenFindings = nil
	if got := stateWithoutFindings(u); !proto.Equal(got, want) {
		t.Fatal("unknown fields lost in the copy")
	}
	u.ProtoReflect().SetUnknown(nil)
	if got := stateWithoutFindings(u); !proto.Equal(got.GetOpenShipment(), u.GetOpenShipment()) {
		t.Fatal("a nested message's unknown fields lost in the copy")
	}
}

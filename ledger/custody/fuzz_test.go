package custody_test

import (
	"testing"

	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// FuzzValidateEvent decodes arbitrary payloads as custody events and
// validates them: never a panic, and whatever passes is well formed.
func FuzzValidateEvent(f *testing.F) {
	ev := &pb.CustodyEvent{Serial: "GPU-1", Type: pb.EventType_EVENT_TYPE_MANUFACTURED, Actor: "acme-gpu",
		Location: &pb.Location{Country: "TW"}, OccurredAt: timestamppb.Now(), Model: "H100"}
	b, _ := proto.Marshal(ev)
	f.Add(b)
	ev.Type, ev.PrevEventHash, ev.Counterparty = pb.EventType_EVENT_TYPE_SHIPPED, make([]byte, 32), "eu-dist"
	b, _ = proto.Marshal(ev)
	f.Add(b)
	f.Add([]byte{0x0a, 0x01, 0x20})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev := new(pb.CustodyEvent)
		if proto.Unmarshal(b, ev) != nil {
			return
		}
		if err := custody.ValidateEvent(ev); err != nil {
			if err.Code != custody.Malformed || err.Reason == "" || err.Msg == "" {
				t.Fatalf("ValidateEvent = %+v; want a Malformed rejection with reason and message", err)
			}
			return
		}
		if !custody.ValidSerial(ev.GetSerial()) || !custody.ValidParticipantID(ev.GetActor()) || !custody.ValidCountry(ev.GetLocation().GetCountry()) {
			t.Fatalf("ValidateEvent accepted %v", ev)
		}
		if n := len(ev.GetPrevEventHash()); ev.GetType() == pb.EventType_EVENT_TYPE_MANUFACTURED && n != 0 || n != 0 && n != custody.HeadHashSize {
			t.Fatalf("ValidateEvent accepted a bad prev_event_hash: %v", ev)
		}
	})
}

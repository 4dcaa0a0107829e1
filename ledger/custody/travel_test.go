package custody_test

import (
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/geo"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type testPolicy struct{}

func (testPolicy) Class(string) pb.CountryClass { return pb.CountryClass_COUNTRY_CLASS_UNSPECIFIED }
func (testPolicy) Denied(string) bool           { return false }
func (testPolicy) MaxSpeedKmh() uint32          { return 1000 }
func (testPolicy) HubDwell() time.Duration      { return 14 * 24 * time.Hour }
func (testPolicy) MaxCustodyChanges() uint32    { return 3 }
func (testPolicy) ResaleWindow() time.Duration  { return 90 * 24 * time.Hour }

type noParticipants struct{}

func (noParticipants) Participant(string) *pb.Participant { return nil }

func i32(v int32) *int32 { return &v }

// TestImpossibleTravelBoundary: at exactly the limit the move is possible;
// one second faster it is not.
func TestImpossibleTravelBoundary(t *testing.T) {
	from := &pb.Location{Country: "DE", LatitudeE6: i32(50_110_000), LongitudeE6: i32(8_680_000)}
	to := &pb.Location{Country: "US", LatitudeE6: i32(39_040_000), LongitudeE6: i32(-77_490_000)}
	d := geo.DistanceM(geo.Point{LatE6: 50_110_000, LngE6: 8_680_000}, geo.Point{LatE6: 39_040_000, LngE6: -77_490_000})
	// At 1,000 km/h, d metres take d*3600/1e6 seconds; round up to the first
	// whole second at or under the limit.
	atLimit := (d*3600 + 999_999) / 1_000_000
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		secs int64
		want bool
	}{{atLimit, false}, {atLimit + 1, false}, {atLimit - 1, true}, {0, true}} {
		st := &pb.SerialState{Serial: "S", State: pb.CustodyState_CUSTODY_STATE_INSTALLED, Custodian: "dc", Location: from,
			CustodyAt: timestamppb.New(t0), HeadHash: make([]byte, 32), EventCount: 3}
		ev := &pb.CustodyEvent{Serial: "S", Type: pb.EventType_EVENT_TYPE_ATTESTED, Actor: "dc", Location: to,
			OccurredAt: timestamppb.New(t0.Add(time.Duration(tc.secs) * time.Second)), PrevEventHash: make([]byte, 32)}
		_, flags, rej := custody.Next(custody.Step{State: st, Event: ev, Actor: &pb.Participant{Id: "dc", Role: pb.Role_ROLE_DATACENTRE}, Index: 3, EntryHash: make([]byte, 32)},
			noParticipants{}, testPolicy{})
		if rej != nil {
			t.Fatal(rej)
		}
		got := false
		for _, f := range flags {
			got = got || f.GetKind() == pb.FindingKind_FINDING_KIND_IMPOSSIBLE_TRAVEL
		}
		if got != tc.want {
			t.Errorf("%d km in %d s: IMPOSSIBLE_TRAVEL = %v, want %v (flags %v)", d/1000, tc.secs, got, tc.want, flags)
		}
	}
}

// Two events in one country judged from a centroid are not judged at all.
func TestImpossibleTravelSameCountryCentroid(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	st := &pb.SerialState{Serial: "S", State: pb.CustodyState_CUSTODY_STATE_IN_CUSTODY, Custodian: "dc",
		Location: &pb.Location{Country: "US", LatitudeE6: i32(37_340_000), LongitudeE6: i32(-121_890_000)}, CustodyAt: timestamppb.New(t0), HeadHash: make([]byte, 32)}
	ev := &pb.CustodyEvent{Serial: "S", Type: pb.EventType_EVENT_TYPE_ATTESTED, Actor: "dc", Location: &pb.Location{Country: "US"},
		OccurredAt: timestamppb.New(t0.Add(time.Minute)), PrevEventHash: make([]byte, 32)}
	_, flags, _ := custody.Next(custody.Step{State: st, Event: ev, Actor: &pb.Participant{Id: "dc"}, EntryHash: make([]byte, 32)}, noParticipants{}, testPolicy{})
	for _, f := range flags {
		if f.GetKind() == pb.FindingKind_FINDING_KIND_IMPOSSIBLE_TRAVEL {
			t.Fatalf("flagged from a centroid within one country: %v", f)
		}
	}
}

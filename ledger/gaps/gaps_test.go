package gaps_test

import (
	"slices"
	"testing"

	"github.com/gpuledger/gpuledger/ledger/gaps"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A finding is open at T when it arose at or before T and was not resolved
// at or before T; as of an instant before its resolution it is shown open.
func TestOpenAt(t *testing.T) {
	arose, resolved := int64(1_000), int64(2_000)
	f := func() *pb.Finding {
		return &pb.Finding{Time: &timestamppb.Timestamp{Seconds: arose}, Resolved: true, ResolvedByIndex: 7,
			ResolvedAt: &timestamppb.Timestamp{Seconds: resolved}}
	}
	for _, tc := range []struct {
		asOf       int64
		open       bool
		present    bool // AsOf returns it
		isResolved bool
	}{
		{arose - 1, false, false, false},
		{arose, true, true, false},
		{resolved - 1, true, true, false},
		{resolved, false, true, true},
		{resolved + 1, false, true, true},
	} {
		if got := gaps.OpenAt(f(), tc.asOf); got != tc.open {
			t.Errorf("OpenAt(%d) = %v, want %v", tc.asOf, got, tc.open)
		}
		got := gaps.AsOf(f(), tc.asOf)
		if (got != nil) != tc.present {
			t.Fatalf("AsOf(%d) = %v, want present %v", tc.asOf, got, tc.present)
		}
		if got != nil && (got.GetResolved() != tc.isResolved || (got.GetResolvedByIndex() != 0) != tc.isResolved || (got.GetResolvedAt() != nil) != tc.isResolved) {
			t.Errorf("AsOf(%d) = %v; want resolved %v with its index and time, or neither", tc.asOf, got, tc.isResolved)
		}
	}
	open := &pb.Finding{Time: &timestamppb.Timestamp{Seconds: arose}}
	if !gaps.OpenAt(open, arose+1_000_000) {
		t.Error("an unresolved finding closed by itself")
	}
}

// A flag's finding names the actor first, then the flag's participants and
// the counterparty, each once, and cites the related entries before the
// flagged one, oldest first.
func TestFromFlag(t *testing.T) {
	ev := &pb.CustodyEvent{Serial: "S", Actor: "front", Counterparty: "dist", Location: &pb.Location{Country: "AE"},
		OccurredAt: timestamppb.Now()}
	fl := &pb.Flag{Kind: pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, Participants: []string{"dc", "front", "dist"},
		RelatedIndexes: []uint64{9, 3, 9}, Country: ""}
	got := gaps.FromFlag(fl, ev, 12, 1, 4)
	if want := []string{"front", "dc", "dist"}; !slices.Equal(got.GetParticipants(), want) {
		t.Errorf("participants %v, want %v", got.GetParticipants(), want)
	}
	if want := []uint64{3, 9, 12}; !slices.Equal(got.GetEvidenceIndexes(), want) {
		t.Errorf("evidence %v, want %v", got.GetEvidenceIndexes(), want)
	}
	if got.GetId() != "CUSTODY_BREAK/12.1" || got.GetCountry() != "AE" || got.GetPolicyVersion() != 4 {
		t.Errorf("finding %v", got)
	}
	fl.Country = "US"
	if c := gaps.FromFlag(fl, ev, 12, 0, 4).GetCountry(); c != "US" {
		t.Errorf("a flag's own country %q was not kept", c)
	}
}

// Package gaps turns the ledger's facts into findings: the gaps in a GPU's
// custody record that suggest diversion. Findings triggered by an entry come
// from the flags the custody rules record on it; time-based findings
// (HANDOFF_UNCONFIRMED, SILENT) are due when a window runs out, and are
// computed for an as-of instant from indexes the ledger keeps ordered by
// event time, never by scanning serials.
//
// Everything here is pure: the ledger calls it inside Apply (deterministic)
// and at query time.
package gaps

import (
	"fmt"
	"strings"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Windows are the policy's time limits.
type Windows struct {
	Handoff, SilenceInstalled, SilenceInCustody time.Duration
}

// SilenceClass says which silence window applies to a state: 1 installed,
// 2 otherwise (in custody, in transit), 0 none (destroyed, lost, no state).
func SilenceClass(st *pb.SerialState) byte {
	switch st.GetState() {
	case pb.CustodyState_CUSTODY_STATE_INSTALLED:
		return 1
	case pb.CustodyState_CUSTODY_STATE_IN_CUSTODY, pb.CustodyState_CUSTODY_STATE_IN_TRANSIT:
		return 2
	}
	return 0
}

// Window returns the silence window of a class.
func (w Windows) Window(class byte) time.Duration {
	if class == 1 {
		return w.SilenceInstalled
	}
	return w.SilenceInCustody
}

// Name returns a kind's short name, for example "SILENT".
func Name(k pb.FindingKind) string { return strings.TrimPrefix(k.String(), "FINDING_KIND_") }

// FromFlag is the finding an entry's flag stands for, located in country.
func FromFlag(f *pb.Flag, ev *pb.CustodyEvent, index uint64, ordinal int, policyVersion uint64, country string) *pb.Finding {
	parts := []string{ev.GetActor()}
	if c := ev.GetCounterparty(); c != "" && c != ev.GetActor() {
		parts = append(parts, c)
	}
	id := fmt.Sprintf("%s/%d", Name(f.GetKind()), index)
	if ordinal > 0 {
		id = fmt.Sprintf("%s.%d", id, ordinal)
	}
	return &pb.Finding{
		Id: id, Kind: f.GetKind(), Severity: f.GetSeverity(), Serial: ev.GetSerial(), Participants: parts,
		EvidenceIndexes: []uint64{index}, PolicyVersion: policyVersion, Time: ev.GetOccurredAt(),
		Summary: ev.GetSerial() + ": " + f.GetDetail(), Country: country,
	}
}

// Handoff is the HANDOFF_UNCONFIRMED finding of an open shipment, located in
// its destination.
func Handoff(serial string, sh *pb.Shipment, w Windows, policyVersion uint64) *pb.Finding {
	due := sh.GetShippedAt().AsTime().Add(w.Handoff)
	return &pb.Finding{
		Id: fmt.Sprintf("HANDOFF_UNCONFIRMED/%d", sh.GetShippedIndex()), Kind: pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED,
		Severity: pb.Severity_SEVERITY_HIGH, Serial: serial, Participants: []string{sh.GetShipper(), sh.GetConsignee()},
		EvidenceIndexes: []uint64{sh.GetShippedIndex()}, PolicyVersion: policyVersion, Time: timestamppb.New(due),
		Country: sh.GetDestinationCountry(),
		Summary: fmt.Sprintf("%s: shipped by %s to %s on %s, not received within %s", serial, sh.GetShipper(), sh.GetConsignee(),
			sh.GetShippedAt().AsTime().UTC().Format(time.RFC3339), days(w.Handoff)),
	}
}

// Silent is the SILENT finding of a serial in state st (of silence class
// class) that has said nothing since its last event, located where that
// event was.
func Silent(st *pb.SerialState, class byte, w Windows, policyVersion uint64) *pb.Finding {
	what := "in custody"
	if class == 1 {
		what = "installed"
	}
	last := st.GetLastEventAt().AsTime()
	return &pb.Finding{
		Id: fmt.Sprintf("SILENT/%s/%d", st.GetSerial(), st.GetLastIndex()), Kind: pb.FindingKind_FINDING_KIND_SILENT,
		Severity: pb.Severity_SEVERITY_MEDIUM, Serial: st.GetSerial(), Participants: []string{st.GetCustodian()},
		EvidenceIndexes: []uint64{st.GetLastIndex()}, PolicyVersion: policyVersion, Time: timestamppb.New(last.Add(w.Window(class))),
		Country: st.GetLocation().GetCountry(),
		Summary: fmt.Sprintf("%s: %s by %s, no event since %s (over %s)", st.GetSerial(), what, st.GetCustodian(), last.UTC().Format(time.RFC3339), days(w.Window(class))),
	}
}

func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// Filter selects findings; zero fields match all.
type Filter struct {
	Kinds           []pb.FindingKind
	MinSeverity     pb.Severity
	Serial          string
	Participant     string
	Country         string // matched against Finding locations by the caller
	IncludeResolved bool
}

// Match reports whether f passes the filter (all but Kinds and Country,
// which the caller applies by index and location).
func (flt Filter) Match(f *pb.Finding) bool {
	if f.GetSeverity() < flt.MinSeverity {
		return false
	}
	if flt.Serial != "" && f.GetSerial() != flt.Serial {
		return false
	}
	if f.GetResolved() && !flt.IncludeResolved {
		return false
	}
	if flt.Participant != "" {
		found := false
		for _, p := range f.GetParticipants() {
			found = found || p == flt.Participant
		}
		if !found {
			return false
		}
	}
	return true
}

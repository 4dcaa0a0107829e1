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
	"slices"
	"strings"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Windows are the policy's time limits.
type Windows struct {
	Handoff, SilenceInstalled, SilenceInCustody time.Duration
}

// WindowsOf returns a policy's windows.
func WindowsOf(p interface {
	HandoffWindow() time.Duration
	SilenceInstalled() time.Duration
	SilenceInCustody() time.Duration
}) Windows {
	return Windows{Handoff: p.HandoffWindow(), SilenceInstalled: p.SilenceInstalled(), SilenceInCustody: p.SilenceInCustody()}
}

// Due returns the time-based findings of a serial in state st that are open
// at asOf: its open shipment's HANDOFF_UNCONFIRMED and its SILENT, each when
// its window has run out.
func Due(st *pb.SerialState, asOf time.Time, w Windows, policyVersion uint64) []*pb.Finding {
	var out []*pb.Finding
	if sh := st.GetOpenShipment(); sh != nil && HandoffDue(sh, w) < asOf.Unix() {
		out = append(out, Handoff(st, sh, w, policyVersion))
	}
	if c := SilenceClass(st); c != 0 && SilenceDue(st.GetCustodyAt().GetSeconds(), c, w) < asOf.Unix() {
		out = append(out, Silent(st, c, w, policyVersion))
	}
	return out
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

// FromFlag is the finding an entry's flag stands for. It names the actor,
// the parties the flag names and the counterparty, and cites the entries the
// flag rests on and the entry itself.
func FromFlag(f *pb.Flag, ev *pb.CustodyEvent, index uint64, ordinal int, policyVersion uint64) *pb.Finding {
	parts := []string{ev.GetActor()}
	for _, p := range append(slices.Clone(f.GetParticipants()), ev.GetCounterparty()) {
		if p != "" && !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	var evidence []uint64
	for _, i := range f.GetRelatedIndexes() {
		if i < index && !slices.Contains(evidence, i) {
			evidence = append(evidence, i)
		}
	}
	slices.Sort(evidence)
	id := fmt.Sprintf("%s/%d", Name(f.GetKind()), index)
	if ordinal > 0 {
		id = fmt.Sprintf("%s.%d", id, ordinal)
	}
	country := f.GetCountry()
	if country == "" {
		country = ev.GetLocation().GetCountry()
	}
	return &pb.Finding{
		Id: id, Kind: f.GetKind(), Severity: f.GetSeverity(), Serial: ev.GetSerial(), Participants: parts,
		EvidenceIndexes: append(evidence, index), PolicyVersion: policyVersion, Time: ev.GetOccurredAt(),
		Summary: ev.GetSerial() + ": " + f.GetDetail(), Country: country,
	}
}

// FromChangeFlag makes the finding of a flag on a registry change at index:
// about participants, not a serial.
func FromChangeFlag(f *pb.Flag, ch *pb.RegistryChange, index uint64, ordinal int, policyVersion uint64) *pb.Finding {
	id := fmt.Sprintf("%s/%d", Name(f.GetKind()), index)
	if ordinal > 0 {
		id = fmt.Sprintf("%s.%d", id, ordinal)
	}
	return &pb.Finding{
		Id: id, Kind: f.GetKind(), Severity: f.GetSeverity(), Participants: slices.Clone(f.GetParticipants()),
		EvidenceIndexes: []uint64{index}, PolicyVersion: policyVersion, Time: ch.GetOccurredAt(),
		Summary: "registry: " + f.GetDetail(), Country: f.GetCountry(),
	}
}

// HandoffDue is the last second at which a shipment's receipt is on time;
// its HANDOFF_UNCONFIRMED arises the second after.
func HandoffDue(sh *pb.Shipment, w Windows) int64 {
	return sh.GetShippedAt().GetSeconds() + int64(w.Handoff/time.Second)
}

// SilenceDue is the last second a serial of silence class class whose
// parties with standing last spoke at custodyAt (seconds) may stay silent.
func SilenceDue(custodyAt int64, class byte, w Windows) int64 {
	return custodyAt + int64(w.Window(class)/time.Second)
}

// Handoff is the HANDOFF_UNCONFIRMED finding of the open shipment of st,
// located in its destination; claims on the serial (rival receipts) are named
// in it.
func Handoff(st *pb.SerialState, sh *pb.Shipment, w Windows, policyVersion uint64) *pb.Finding {
	serial := st.GetSerial()
	parts := []string{sh.GetShipper(), sh.GetConsignee()}
	evidence := []uint64{sh.GetShippedIndex()}
	claims := ""
	for _, c := range st.GetClaims() {
		if c.GetIndex() > sh.GetShippedIndex() {
			parts = append(parts, c.GetClaimant())
			evidence = append(evidence, c.GetIndex())
			claims += fmt.Sprintf("; %s claims to have received it on %s (entry %d)", c.GetClaimant(), c.GetClaimedAt().AsTime().UTC().Format(time.DateOnly), c.GetIndex())
		}
	}
	return &pb.Finding{
		Id: fmt.Sprintf("HANDOFF_UNCONFIRMED/%d", sh.GetShippedIndex()), Kind: pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED,
		Severity: pb.Severity_SEVERITY_HIGH, Serial: serial, Participants: parts,
		EvidenceIndexes: evidence, PolicyVersion: policyVersion, Time: &timestamppb.Timestamp{Seconds: HandoffDue(sh, w) + 1},
		Country: sh.GetDestinationCountry(),
		Summary: fmt.Sprintf("%s: shipped by %s to %s on %s, not received by %s within %s%s", serial, sh.GetShipper(), sh.GetConsignee(),
			sh.GetShippedAt().AsTime().UTC().Format(time.RFC3339), sh.GetConsignee(), Days(w.Handoff), claims),
	}
}

// Silent is the SILENT finding of a serial in state st (of silence class
// class) whose parties with standing have said nothing since custody_at,
// located where they last placed it.
func Silent(st *pb.SerialState, class byte, w Windows, policyVersion uint64) *pb.Finding {
	last := st.GetCustodyAt().AsTime()
	parts := []string{st.GetCustodian()}
	who := "by " + st.GetCustodian() + ", which has recorded nothing"
	switch sh := st.GetOpenShipment(); {
	case class == 1:
		who = "installed " + who
	case sh != nil && st.GetState() == pb.CustodyState_CUSTODY_STATE_IN_TRANSIT:
		parts = []string{sh.GetShipper(), sh.GetConsignee()}
		who = fmt.Sprintf("in transit from %s to %s, neither of which has recorded anything", sh.GetShipper(), sh.GetConsignee())
	default:
		who = "held " + who
	}
	others := ""
	if st.GetLastIndex() != st.GetCustodyIndex() {
		others = fmt.Sprintf("; others have recorded events on it since (latest entry %d)", st.GetLastIndex())
	}
	return &pb.Finding{
		Id: fmt.Sprintf("SILENT/%s/%d", st.GetSerial(), st.GetCustodyIndex()), Kind: pb.FindingKind_FINDING_KIND_SILENT,
		Severity: pb.Severity_SEVERITY_MEDIUM, Serial: st.GetSerial(), Participants: parts,
		EvidenceIndexes: []uint64{st.GetCustodyIndex()}, PolicyVersion: policyVersion,
		Time:    &timestamppb.Timestamp{Seconds: SilenceDue(st.GetCustodyAt().GetSeconds(), class, w) + 1},
		Country: st.GetLocation().GetCountry(),
		Summary: fmt.Sprintf("%s: %s since %s (entry %d), over %s%s", st.GetSerial(), who,
			last.UTC().Format(time.RFC3339), st.GetCustodyIndex(), Days(w.Window(class)), others),
	}
}

// OpenAt reports whether a finding is open at the instant asOf (seconds): it
// arose at or before asOf and nothing at or before asOf resolved it.
func OpenAt(f *pb.Finding, asOf int64) bool {
	return f.GetTime().GetSeconds() <= asOf && (!f.GetResolved() || f.GetResolvedAt().GetSeconds() > asOf)
}

// AsOf returns f as it stood at asOf (seconds), or nil when it had not arisen
// then: a finding resolved later is returned open, without its resolution.
func AsOf(f *pb.Finding, asOf int64) *pb.Finding {
	if f.GetTime().GetSeconds() > asOf {
		return nil
	}
	if OpenAt(f, asOf) && f.GetResolved() { // resolved only later
		f.Resolved, f.ResolvedByIndex, f.ResolvedAt = false, 0, nil
	}
	return f
}

// Days renders a window in whole days when it is one ("21 days"), else as a
// duration.
func Days(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
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

package custody

import (
	"bytes"
	"fmt"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
)

// Participants looks participants up by id. Implementations MUST return nil for
// an unknown id and MUST NOT be mutated while Next runs.
type Participants interface {
	Participant(id string) *pb.Participant
}

// Policy answers what the rules ask of export policy.
type Policy interface {
	// Class returns how a country is treated (UNSPECIFIED for an unknown one).
	Class(country string) pb.CountryClass
	// Denied reports whether a participant is on the denied-party list.
	Denied(participant string) bool
	// MaxSpeedKmh is the speed above which consecutive events are
	// IMPOSSIBLE_TRAVEL.
	MaxSpeedKmh() uint32
}

// Step is one event to apply to a serial.
type Step struct {
	// State is the serial's current state, nil when it has no records.
	State *pb.SerialState
	// Event is the validated event (see ValidateEvent).
	Event *pb.CustodyEvent
	// Actor is the registered participant that signed the event.
	Actor *pb.Participant
	// Index is the log index the event will get.
	Index uint64
	// EntryHash is the hash of the envelope that carries the event.
	EntryHash []byte
}

// Next applies one event to a serial's state. It returns the new state and the
// flags the event raises, or a rejection; st is never modified.
func Next(s Step, reg Participants, pol Policy) (*pb.SerialState, []*pb.Flag, *Error) {
	ev, st, actor := s.Event, s.State, s.Actor
	var flags []*pb.Flag
	flag := func(k pb.FindingKind, sev pb.Severity, format string, args ...any) {
		flags = append(flags, &pb.Flag{Kind: k, Severity: sev, Detail: fmt.Sprintf(format, args...)})
	}
	typ := ev.GetType()

	if st == nil {
		if typ != pb.EventType_EVENT_TYPE_MANUFACTURED {
			return nil, nil, Reject(NotFound, ReasonUnknownSerial,
				"serial %q has no records; its first event must be MANUFACTURED", ev.GetSerial())
		}
		if actor.GetRole() != pb.Role_ROLE_MANUFACTURER {
			return nil, nil, Reject(Forbidden, ReasonNotManufacturer,
				"%s is a %s; only a MANUFACTURER may record MANUFACTURED", actor.GetId(), roleName(actor.GetRole()))
		}
		next := &pb.SerialState{
			Serial:       ev.GetSerial(),
			State:        pb.CustodyState_CUSTODY_STATE_IN_CUSTODY,
			Custodian:    actor.GetId(),
			Manufacturer: actor.GetId(),
			Model:        ev.GetModel(),
			Eccn:         ev.GetEccn(),
			ParentSerial: ev.GetParentSerial(),
			FirstIndex:   s.Index,
		}
		advance(next, s)
		locationFlags(ev, pol, flag)
		return next, flags, nil
	}

	if typ == pb.EventType_EVENT_TYPE_MANUFACTURED {
		return nil, nil, Reject(Exists, ReasonSerialExists,
			"serial %q was already manufactured (entry %d)", ev.GetSerial(), st.GetFirstIndex())
	}
	if !bytes.Equal(ev.GetPrevEventHash(), st.GetHeadHash()) {
		e := Reject(StaleHead, ReasonStaleHead,
			"prev_event_hash %x is not the head of serial %q (now %x after %d events); fetch the head and sign again",
			ev.GetPrevEventHash(), ev.GetSerial(), st.GetHeadHash(), st.GetEventCount())
		e.Head = bytes.Clone(st.GetHeadHash())
		return nil, nil, e
	}

	next := proto.Clone(st).(*pb.SerialState)
	next.OpenFindings = nil
	advance(next, s)
	if detail, ok := impossibleTravel(st, ev, pol.MaxSpeedKmh()); ok {
		flag(pb.FindingKind_FINDING_KIND_IMPOSSIBLE_TRAVEL, pb.Severity_SEVERITY_HIGH, "%s", detail)
	}

	if st.GetState() == pb.CustodyState_CUSTODY_STATE_DESTROYED {
		flag(pb.FindingKind_FINDING_KIND_ACTIVITY_AFTER_TERMINAL, pb.Severity_SEVERITY_CRITICAL,
			"%s by %s after the GPU was destroyed", typeName(typ), actor.GetId())
		locationFlags(ev, pol, flag)
		return next, flags, nil
	}

	holds := st.GetCustodian() == actor.GetId() &&
		(st.GetState() == pb.CustodyState_CUSTODY_STATE_IN_CUSTODY || st.GetState() == pb.CustodyState_CUSTODY_STATE_INSTALLED)
	needCustodian := func() *Error {
		if holds {
			return nil
		}
		return Reject(Forbidden, ReasonNotCustodian, "%s may not record %s: %s", actor.GetId(), typeName(typ), describeHolder(st))
	}

	switch typ {
	case pb.EventType_EVENT_TYPE_SHIPPED:
		if err := needCustodian(); err != nil {
			return nil, nil, err
		}
		consigneeID := ev.GetCounterparty()
		consignee := reg.Participant(consigneeID)
		dest := ev.GetDestinationCountry()
		if dest == "" && consignee != nil {
			dest = consignee.GetCountry()
		}
		if consignee == nil {
			flag(pb.FindingKind_FINDING_KIND_UNREGISTERED_CONSIGNEE, pb.Severity_SEVERITY_HIGH,
				"shipped by %s to %q, which is not a registered participant", actor.GetId(), consigneeID)
		}
		switch {
		case dest != "" && pol.Class(dest) == pb.CountryClass_COUNTRY_CLASS_RESTRICTED:
			flag(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL,
				"shipped by %s to %s bound for %s, a restricted destination", actor.GetId(), consigneeID, dest)
		case consignee != nil && pol.Class(consignee.GetCountry()) == pb.CountryClass_COUNTRY_CLASS_RESTRICTED:
			flag(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL,
				"shipped by %s to %s, registered in %s, a restricted destination", actor.GetId(), consigneeID, consignee.GetCountry())
		}
		if pol.Denied(consigneeID) {
			flag(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL,
				"shipped by %s to %s, a denied party", actor.GetId(), consigneeID)
		}
		if dest != "" && dest != ev.GetLocation().GetCountry() && ev.GetExportLicense() == "" &&
			pol.Class(dest) == pb.CountryClass_COUNTRY_CLASS_LICENSED {
			flag(pb.FindingKind_FINDING_KIND_LICENSE_MISSING, pb.Severity_SEVERITY_HIGH,
				"shipped by %s from %s into %s, which needs an export licence, with none given", actor.GetId(), ev.GetLocation().GetCountry(), dest)
		}
		next.State = pb.CustodyState_CUSTODY_STATE_IN_TRANSIT
		next.InstallSite = nil
		next.LastAttestedAt = nil
		next.OpenShipment = &pb.Shipment{
			Shipper:            actor.GetId(),
			Consignee:          consigneeID,
			DestinationCountry: dest,
			ShippedIndex:       s.Index,
			ShippedAt:          ev.GetOccurredAt(),
			ExportLicense:      ev.GetExportLicense(),
		}

	case pb.EventType_EVENT_TYPE_RECEIVED:
		switch sh := st.GetOpenShipment(); {
		case sh == nil:
			flag(pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH, pb.Severity_SEVERITY_HIGH,
				"received by %s with no open shipment (%s)", actor.GetId(), describeHolder(st))
		case sh.GetConsignee() != actor.GetId():
			flag(pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH, pb.Severity_SEVERITY_HIGH,
				"received by %s; %s shipped it to %s", actor.GetId(), sh.GetShipper(), sh.GetConsignee())
		}
		next.State = pb.CustodyState_CUSTODY_STATE_IN_CUSTODY
		next.Custodian = actor.GetId()
		next.OpenShipment = nil
		next.InstallSite = nil
		next.LastAttestedAt = nil

	case pb.EventType_EVENT_TYPE_INSTALLED:
		if err := needCustodian(); err != nil {
			return nil, nil, err
		}
		next.State = pb.CustodyState_CUSTODY_STATE_INSTALLED
		next.InstallSite = proto.Clone(ev.GetLocation()).(*pb.Location)
		next.LastAttestedAt = ev.GetOccurredAt()

	case pb.EventType_EVENT_TYPE_ATTESTED:
		switch {
		case st.GetState() != pb.CustodyState_CUSTODY_STATE_INSTALLED:
			flag(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.Severity_SEVERITY_HIGH,
				"attested by %s but the GPU is not installed (%s)", actor.GetId(), describeHolder(st))
		case st.GetCustodian() != actor.GetId():
			flag(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.Severity_SEVERITY_HIGH,
				"attested by %s; the custodian is %s", actor.GetId(), st.GetCustodian())
		default:
			if !sameSite(ev.GetLocation(), st.GetInstallSite()) {
				flag(pb.FindingKind_FINDING_KIND_LOCATION_MISMATCH, pb.Severity_SEVERITY_HIGH,
					"attested by %s at %s; installed at %s", actor.GetId(), placeName(ev.GetLocation()), placeName(st.GetInstallSite()))
			}
			next.LastAttestedAt = ev.GetOccurredAt()
		}

	case pb.EventType_EVENT_TYPE_DECOMMISSIONED:
		if err := needCustodian(); err != nil {
			return nil, nil, err
		}
		next.State = pb.CustodyState_CUSTODY_STATE_IN_CUSTODY
		next.InstallSite = nil
		next.LastAttestedAt = nil

	case pb.EventType_EVENT_TYPE_DESTROYED:
		if err := needCustodian(); err != nil {
			return nil, nil, err
		}
		next.State = pb.CustodyState_CUSTODY_STATE_DESTROYED
		next.InstallSite = nil
		next.LastAttestedAt = nil

	case pb.EventType_EVENT_TYPE_REPORTED_LOST:
		sh := st.GetOpenShipment()
		inTransitParty := st.GetState() == pb.CustodyState_CUSTODY_STATE_IN_TRANSIT &&
			(sh.GetShipper() == actor.GetId() || sh.GetConsignee() == actor.GetId())
		if !holds && !inTransitParty {
			flag(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.Severity_SEVERITY_HIGH,
				"loss reported by %s, who neither holds nor shipped it (%s)", actor.GetId(), describeHolder(st))
		}
		flag(pb.FindingKind_FINDING_KIND_REPORTED_LOST, pb.Severity_SEVERITY_MEDIUM,
			"reported lost by %s (%s)", actor.GetId(), describeHolder(st))
		next.State = pb.CustodyState_CUSTODY_STATE_LOST
		next.InstallSite = nil
		next.LastAttestedAt = nil
	}
	if !hasKind(flags, pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION) {
		locationFlags(ev, pol, flag)
	}
	return next, flags, nil
}

// advance moves the serial's head to the event.
func advance(next *pb.SerialState, s Step) {
	next.HeadHash = bytes.Clone(s.EntryHash)
	next.EventCount++
	next.LastIndex = s.Index
	next.LastEventAt = s.Event.GetOccurredAt()
	next.Location = proto.Clone(s.Event.GetLocation()).(*pb.Location)
	if p := s.Event.GetParentSerial(); p != "" {
		next.ParentSerial = p
	}
}

func locationFlags(ev *pb.CustodyEvent, pol Policy, flag func(pb.FindingKind, pb.Severity, string, ...any)) {
	if c := ev.GetLocation().GetCountry(); pol.Class(c) == pb.CountryClass_COUNTRY_CLASS_RESTRICTED {
		flag(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL,
			"%s by %s located in %s, a restricted destination", typeName(ev.GetType()), ev.GetActor(), c)
	}
}

func hasKind(flags []*pb.Flag, k pb.FindingKind) bool {
	for _, f := range flags {
		if f.GetKind() == k {
			return true
		}
	}
	return false
}

func sameSite(a, b *pb.Location) bool {
	if a.GetCountry() != b.GetCountry() {
		return false
	}
	return a.GetSiteId() == "" || b.GetSiteId() == "" || a.GetSiteId() == b.GetSiteId()
}

func placeName(l *pb.Location) string {
	if l.GetSiteId() != "" {
		return l.GetSiteId() + " (" + l.GetCountry() + ")"
	}
	return l.GetCountry()
}

func describeHolder(st *pb.SerialState) string {
	switch st.GetState() {
	case pb.CustodyState_CUSTODY_STATE_IN_TRANSIT:
		return fmt.Sprintf("it is in transit from %s to %s", st.GetOpenShipment().GetShipper(), st.GetOpenShipment().GetConsignee())
	case pb.CustodyState_CUSTODY_STATE_INSTALLED:
		return fmt.Sprintf("it is installed by %s", st.GetCustodian())
	case pb.CustodyState_CUSTODY_STATE_LOST:
		return fmt.Sprintf("it was reported lost; last custodian %s", st.GetCustodian())
	case pb.CustodyState_CUSTODY_STATE_DESTROYED:
		return "it was destroyed"
	}
	return fmt.Sprintf("it is in the custody of %s", st.GetCustodian())
}

// TypeName returns an event type's short name, for example "SHIPPED".
func TypeName(t pb.EventType) string { return typeName(t) }

func typeName(t pb.EventType) string {
	n := t.String()
	const p = "EVENT_TYPE_"
	if len(n) > len(p) && n[:len(p)] == p {
		return n[len(p):]
	}
	return n
}

func roleName(r pb.Role) string {
	n := r.String()
	const p = "ROLE_"
	if len(n) > len(p) && n[:len(p)] == p {
		return n[len(p):]
	}
	return n
}

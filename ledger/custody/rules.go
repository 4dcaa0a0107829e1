package custody

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
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
	// IMPOSSIBLE_TRAVEL; 0 turns the rule off.
	MaxSpeedKmh() uint32
	// HubDwell is how soon a GPU received in a WATCH country may be shipped
	// on before it is TRANSSHIPMENT_HUB.
	HubDwell() time.Duration
	// MaxCustodyChanges and ResaleWindow bound RAPID_RESALE: more changes of
	// custodian than the first within the second.
	MaxCustodyChanges() uint32
	ResaleWindow() time.Duration
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

// Standing is what the actor of an event is to the serial at that moment.
// It decides, with the event's type and the serial's state, whether the event
// moves the serial's state (see the table in Next).
type Standing int

// Standings.
const (
	// Stranger: no part in the serial's custody.
	Stranger Standing = iota
	// Custodian: holds the GPU (in custody, installed, lost by it, or the
	// party that destroyed it).
	Custodian
	// Shipper: shipped the GPU, which is in transit (or lost in transit).
	Shipper
	// Consignee: the GPU is shipped to it and not yet received.
	Consignee
	// Claimant: has recorded a receipt the record does not give it (a rival
	// claim of possession, see SerialState.claims).
	Claimant
)

func (s Standing) String() string {
	return [...]string{"stranger", "custodian", "shipper", "consignee", "claimant"}[s]
}

// StandingOf returns what actor is to the serial in state st.
func StandingOf(st *pb.SerialState, actor string) Standing {
	if sh := st.GetOpenShipment(); sh != nil && (st.GetState() == pb.CustodyState_CUSTODY_STATE_IN_TRANSIT || st.GetState() == pb.CustodyState_CUSTODY_STATE_LOST) {
		switch actor {
		case sh.GetConsignee():
			return Consignee
		case sh.GetShipper():
			return Shipper
		}
	} else if actor == st.GetCustodian() {
		return Custodian
	}
	for _, c := range st.GetClaims() {
		if c.GetClaimant() == actor {
			return Claimant
		}
	}
	return Stranger
}

// speaks reports whether a party of this standing speaks for the serial: its
// events move the serial's location and the clock SILENT runs from, even when
// they are flagged. Nobody speaks for a destroyed GPU.
func speaks(s Standing, st *pb.SerialState) bool {
	if st.GetState() == pb.CustodyState_CUSTODY_STATE_DESTROYED {
		return false
	}
	return s == Custodian || s == Shipper || s == Consignee
}

// act is one row of the authority table: who may perform an event type as a
// custodial act, in which states. A custodial act moves the serial's state
// (custodian, state, shipment, install site) and settles a dispute.
type act struct {
	by   []Standing
	in   []pb.CustodyState
	none rejectOrFlag // what an event of this type by anyone else is
}

// rejectOrFlag says what becomes of an event that is not a custodial act.
type rejectOrFlag int

const (
	// claim: accepted and flagged; a stranger's or claimant's word is evidence.
	claim rejectOrFlag = iota
	// custodianOnly: a claimant's is accepted and flagged (it says it holds
	// the GPU, so its acts are evidence of where the GPU went); a stranger's
	// is rejected NOT_CUSTODIAN.
	custodianOnly
)

var (
	held    = []pb.CustodyState{pb.CustodyState_CUSTODY_STATE_IN_CUSTODY, pb.CustodyState_CUSTODY_STATE_INSTALLED}
	transit = []pb.CustodyState{pb.CustodyState_CUSTODY_STATE_IN_TRANSIT}
)

// authority is the custody model in one table: who may move what. Every
// event type not listed here (MANUFACTURED) starts a serial.
//
//	type            custodial act by        in state             otherwise
//	SHIPPED         custodian               in custody, installed   claimant flagged, stranger rejected
//	RECEIVED        consignee               in transit, lost in transit  claim (RECEIVER_MISMATCH)
//	                custodian               lost (it found it)
//	INSTALLED       custodian               in custody, installed   claimant flagged, stranger rejected
//	ATTESTED        custodian               installed            CUSTODY_BREAK
//	DECOMMISSIONED  custodian               in custody, installed   claimant flagged, stranger rejected
//	DESTROYED       custodian               in custody, installed   claimant flagged, stranger rejected
//	REPORTED_LOST   custodian               in custody, installed   CUSTODY_BREAK
//	                shipper, consignee      in transit
//
// After DESTROYED nothing is custodial: every event is ACTIVITY_AFTER_TERMINAL,
// and also CUSTODY_BREAK when it is not by the party that destroyed it.
var authority = map[pb.EventType][]act{
	pb.EventType_EVENT_TYPE_SHIPPED:        {{by: []Standing{Custodian}, in: held, none: custodianOnly}},
	pb.EventType_EVENT_TYPE_RECEIVED:       {{by: []Standing{Consignee}, in: append(slices.Clone(transit), pb.CustodyState_CUSTODY_STATE_LOST)}, {by: []Standing{Custodian}, in: []pb.CustodyState{pb.CustodyState_CUSTODY_STATE_LOST}}},
	pb.EventType_EVENT_TYPE_INSTALLED:      {{by: []Standing{Custodian}, in: held, none: custodianOnly}},
	pb.EventType_EVENT_TYPE_ATTESTED:       {{by: []Standing{Custodian}, in: []pb.CustodyState{pb.CustodyState_CUSTODY_STATE_INSTALLED}}},
	pb.EventType_EVENT_TYPE_DECOMMISSIONED: {{by: []Standing{Custodian}, in: held, none: custodianOnly}},
	pb.EventType_EVENT_TYPE_DESTROYED:      {{by: []Standing{Custodian}, in: held, none: custodianOnly}},
	pb.EventType_EVENT_TYPE_REPORTED_LOST:  {{by: []Standing{Custodian}, in: held}, {by: []Standing{Shipper, Consignee}, in: transit}},
}

// custodial reports whether an event of type typ by a party of standing s in
// state st is a custodial act, and what it is otherwise.
func custodial(typ pb.EventType, s Standing, st pb.CustodyState) (bool, rejectOrFlag) {
	rows := authority[typ]
	for _, r := range rows {
		if slices.Contains(r.by, s) && slices.Contains(r.in, st) {
			return true, 0
		}
	}
	if len(rows) == 0 {
		return false, claim
	}
	return false, rows[0].none
}

// CanHold reports whether a role can take custody of GPUs: auditors and
// regulators cannot.
func CanHold(r pb.Role) bool {
	return r == pb.Role_ROLE_MANUFACTURER || r == pb.Role_ROLE_DISTRIBUTOR || r == pb.Role_ROLE_INTEGRATOR || r == pb.Role_ROLE_DATACENTRE
}

// flagger collects an event's flags.
type flagger struct{ flags []*pb.Flag }

func (f *flagger) add(k pb.FindingKind, sev pb.Severity, country string, parts []string, related []uint64, format string, args ...any) {
	f.flags = append(f.flags, &pb.Flag{Kind: k, Severity: sev, Detail: fmt.Sprintf(format, args...),
		Participants: parts, RelatedIndexes: related, Country: country})
}

func (f *flagger) has(k pb.FindingKind) bool {
	return slices.ContainsFunc(f.flags, func(x *pb.Flag) bool { return x.GetKind() == k })
}

// Next applies one event to a serial's state. It returns the new state and the
// flags the event raises, or a rejection; st is never modified.
//
// The model: a serial's state is what the parties with standing said (see
// the authority table). Anyone else's event is stored, chained and flagged:
// it moves the chain's head and nothing else.
func Next(s Step, reg Participants, pol Policy) (*pb.SerialState, []*pb.Flag, *Error) {
	ev, st, actor := s.Event, s.State, s.Actor
	typ := ev.GetType()
	if rej := checkSite(ev, actor); rej != nil {
		return nil, nil, rej
	}
	if typ == pb.EventType_EVENT_TYPE_RECEIVED && !CanHold(actor.GetRole()) {
		return nil, nil, Reject(Forbidden, ReasonCannotHold,
			"%s is a %s, which cannot take custody of GPUs; only a MANUFACTURER, DISTRIBUTOR, INTEGRATOR or DATACENTRE may record RECEIVED", actor.GetId(), roleName(actor.GetRole()))
	}
	f := &flagger{}

	if st == nil {
		if typ != pb.EventType_EVENT_TYPE_MANUFACTURED {
			return nil, nil, Reject(NotFound, ReasonUnknownSerial,
				"no serial %s: it has no records, so its first event must be MANUFACTURED", ev.GetSerial())
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
		speak(next, s)
		locationFlags(ev, pol, f)
		siteFlags(ev, actor, f)
		return next, f.flags, nil
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
	if typ == pb.EventType_EVENT_TYPE_SHIPPED {
		if c := reg.Participant(ev.GetCounterparty()); c != nil && !CanHold(c.GetRole()) {
			return nil, nil, Reject(Forbidden, ReasonCannotHold,
				"consignee %s is a %s, which cannot take custody of GPUs; ship to a MANUFACTURER, DISTRIBUTOR, INTEGRATOR or DATACENTRE", c.GetId(), roleName(c.GetRole()))
		}
	}

	standing := StandingOf(st, actor.GetId())
	next := stateWithoutFindings(st)
	advance(next, s)

	if st.GetState() == pb.CustodyState_CUSTODY_STATE_DESTROYED {
		destroyer, at := st.GetCustodian(), st.GetCustodyAt().AsTime().UTC().Format(time.DateOnly)
		f.add(pb.FindingKind_FINDING_KIND_ACTIVITY_AFTER_TERMINAL, pb.Severity_SEVERITY_CRITICAL, ev.GetLocation().GetCountry(),
			[]string{destroyer}, []uint64{st.GetCustodyIndex()},
			"%s recorded %s after %s destroyed the GPU (entry %d, %s)", actor.GetId(), typeName(typ), destroyer, st.GetCustodyIndex(), at)
		if actor.GetId() != destroyer {
			f.add(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.Severity_SEVERITY_CRITICAL, ev.GetLocation().GetCountry(),
				[]string{destroyer}, []uint64{st.GetCustodyIndex()},
				"%s recorded %s about a GPU that %s destroyed (entry %d) and that %s never held", actor.GetId(), typeName(typ), destroyer, st.GetCustodyIndex(), actor.GetId())
		}
		locationFlags(ev, pol, f)
		siteFlags(ev, actor, f)
		return next, f.flags, nil
	}

	ok, otherwise := custodial(typ, standing, st.GetState())
	switch {
	case ok:
		if detail, moved := impossibleTravel(st, ev, pol.MaxSpeedKmh()); moved {
			f.add(pb.FindingKind_FINDING_KIND_IMPOSSIBLE_TRAVEL, pb.Severity_SEVERITY_HIGH, ev.GetLocation().GetCountry(),
				[]string{st.GetCustodian()}, []uint64{st.GetCustodyIndex()}, "%s", detail)
		}
		move(next, st, s, reg, pol, f)
		speak(next, s)
		next.Claims = nil
	case speaks(standing, st):
		// The custodian (or a party to the shipment) said something that is
		// not an act it may perform in this state: flagged, but it is still
		// the party that answers for the GPU, so its word counts as a sign of
		// life and of where the GPU is.
		if detail, moved := impossibleTravel(st, ev, pol.MaxSpeedKmh()); moved {
			f.add(pb.FindingKind_FINDING_KIND_IMPOSSIBLE_TRAVEL, pb.Severity_SEVERITY_HIGH, ev.GetLocation().GetCountry(),
				[]string{st.GetCustodian()}, []uint64{st.GetCustodyIndex()}, "%s", detail)
		}
		if rej := misstep(st, s, standing, f); rej != nil {
			return nil, nil, rej
		}
		speak(next, s)
	default:
		if otherwise == custodianOnly && standing != Claimant {
			return nil, nil, Reject(Forbidden, ReasonNotCustodian, "%s may not record %s: %s", actor.GetId(), typeName(typ), describeHolder(st))
		}
		evidence(next, st, s, standing, f)
	}
	if !f.has(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION) {
		locationFlags(ev, pol, f)
	}
	siteFlags(ev, actor, f)
	return next, f.flags, nil
}

// advance moves the serial's chain head to the event: every accepted event
// does, whoever recorded it.
func advance(next *pb.SerialState, s Step) {
	next.HeadHash = bytes.Clone(s.EntryHash)
	next.EventCount++
	next.LastIndex = s.Index
	next.LastEventAt = s.Event.GetOccurredAt()
}

// speak records that a party with standing spoke for the serial: where the
// GPU is, and the clock SILENT runs from.
func speak(next *pb.SerialState, s Step) {
	next.Location = cloneLocation(s.Event.GetLocation())
	next.CustodyAt = s.Event.GetOccurredAt()
	next.CustodyIndex = s.Index
	if p := s.Event.GetParentSerial(); p != "" {
		next.ParentSerial = p
	}
}

// move performs a custodial act on next (a copy of st).
func move(next, st *pb.SerialState, s Step, reg Participants, pol Policy, f *flagger) {
	ev, actor := s.Event, s.Actor.GetId()
	switch ev.GetType() {
	case pb.EventType_EVENT_TYPE_SHIPPED:
		consigneeID := ev.GetCounterparty()
		consignee := reg.Participant(consigneeID)
		dest := ev.GetDestinationCountry()
		if dest == "" && consignee != nil {
			dest = consignee.GetCountry()
		}
		shipFlags(st, s, consignee, dest, pol, f)
		next.State = pb.CustodyState_CUSTODY_STATE_IN_TRANSIT
		next.InstallSite, next.InstallIndex, next.LastAttestedAt = nil, 0, nil
		if dest != st.GetHubArrival().GetCountry() { // a move within the hub keeps its arrival
			next.HubArrival = nil
		}
		next.OpenShipment = &pb.Shipment{
			Shipper:            actor,
			Consignee:          consigneeID,
			DestinationCountry: dest,
			ShippedIndex:       s.Index,
			ShippedAt:          ev.GetOccurredAt(),
			ExportLicense:      ev.GetExportLicense(),
		}

	case pb.EventType_EVENT_TYPE_RECEIVED:
		sh := st.GetOpenShipment()
		next.State = pb.CustodyState_CUSTODY_STATE_IN_CUSTODY
		next.OpenShipment = nil
		next.InstallSite, next.InstallIndex, next.LastAttestedAt = nil, 0, nil
		if sh == nil || sh.GetConsignee() != actor { // the custodian found what it had lost
			return
		}
		next.Custodian = actor
		next.InstalledByCustodian = false
		c := ev.GetLocation().GetCountry()
		switch h := st.GetHubArrival(); {
		case pol.Class(c) != pb.CountryClass_COUNTRY_CLASS_WATCH:
			next.HubArrival = nil
		case h != nil && h.GetCountry() == c: // moved within the hub: it arrived there earlier
		default:
			next.HubArrival = &pb.HubArrival{Country: c, Index: s.Index, ReceivedAt: ev.GetOccurredAt(),
				ShippedFor: sh.GetDestinationCountry(), Shipper: sh.GetShipper()}
		}
		resale(next, st, s, pol, f)

	case pb.EventType_EVENT_TYPE_INSTALLED:
		next.State = pb.CustodyState_CUSTODY_STATE_INSTALLED
		next.InstallSite = cloneLocation(ev.GetLocation())
		next.InstallIndex = s.Index
		next.LastAttestedAt = ev.GetOccurredAt()
		next.InstalledByCustodian = true

	case pb.EventType_EVENT_TYPE_ATTESTED:
		if !sameSite(ev.GetLocation(), st.GetInstallSite()) {
			f.add(pb.FindingKind_FINDING_KIND_LOCATION_MISMATCH, pb.Severity_SEVERITY_HIGH, ev.GetLocation().GetCountry(),
				nil, []uint64{st.GetInstallIndex()},
				"attested by %s at %s, but installed at %s (entry %d)", actor, placeName(ev.GetLocation()), placeName(st.GetInstallSite()), st.GetInstallIndex())
		}
		next.LastAttestedAt = ev.GetOccurredAt()

	case pb.EventType_EVENT_TYPE_DECOMMISSIONED:
		next.State = pb.CustodyState_CUSTODY_STATE_IN_CUSTODY
		next.InstallSite, next.InstallIndex, next.LastAttestedAt = nil, 0, nil

	case pb.EventType_EVENT_TYPE_DESTROYED:
		next.State = pb.CustodyState_CUSTODY_STATE_DESTROYED
		next.InstallSite, next.InstallIndex, next.LastAttestedAt, next.HubArrival = nil, 0, nil, nil

	case pb.EventType_EVENT_TYPE_REPORTED_LOST:
		f.add(pb.FindingKind_FINDING_KIND_REPORTED_LOST, pb.Severity_SEVERITY_MEDIUM, ev.GetLocation().GetCountry(),
			holders(st), []uint64{st.GetCustodyIndex()}, "reported lost by %s (%s)", actor, describeHolder(st))
		next.State = pb.CustodyState_CUSTODY_STATE_LOST
		next.InstallSite, next.InstallIndex, next.LastAttestedAt = nil, 0, nil
	}
}

// shipFlags judges a custodial shipment: its consignee, destination and
// licence, and a departure from a transshipment hub.
func shipFlags(st *pb.SerialState, s Step, consignee *pb.Participant, dest string, pol Policy, f *flagger) {
	ev, actor, consigneeID := s.Event, s.Actor.GetId(), s.Event.GetCounterparty()
	from := ev.GetLocation().GetCountry()
	on := []string{consigneeID}
	if consignee == nil {
		f.add(pb.FindingKind_FINDING_KIND_UNREGISTERED_CONSIGNEE, pb.Severity_SEVERITY_HIGH, dest, on, nil,
			"shipped by %s to %s, which is not a registered participant, bound for %s", actor, Quote(consigneeID), orUnknown(dest))
	}
	switch {
	case dest != "" && pol.Class(dest) == pb.CountryClass_COUNTRY_CLASS_RESTRICTED:
		f.add(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL, dest, on, nil,
			"shipped by %s to %s bound for %s, a restricted destination", actor, consigneeID, dest)
	case consignee != nil && pol.Class(consignee.GetCountry()) == pb.CountryClass_COUNTRY_CLASS_RESTRICTED:
		f.add(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL, consignee.GetCountry(), on, nil,
			"shipped by %s to %s, registered in %s, a restricted destination", actor, consigneeID, consignee.GetCountry())
	}
	if pol.Denied(consigneeID) {
		f.add(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL, dest, on, nil,
			"shipped by %s to %s, a denied party", actor, consigneeID)
	}
	if dest != "" && dest != from && ev.GetExportLicense() == "" && pol.Class(dest) == pb.CountryClass_COUNTRY_CLASS_LICENSED {
		f.add(pb.FindingKind_FINDING_KIND_LICENSE_MISSING, pb.Severity_SEVERITY_HIGH, dest, on, nil,
			"shipped by %s from %s to %s in %s, which needs an export licence, with none given", actor, from, consigneeID, dest)
	}
	if s.Actor.GetRole() == pb.Role_ROLE_DATACENTRE && !st.GetInstalledByCustodian() {
		var related []uint64
		since := ""
		if n := len(st.GetCustodyChanges()); n > 0 && st.GetCustodyChanges()[n-1].GetCustodian() == actor {
			c := st.GetCustodyChanges()[n-1]
			related = []uint64{c.GetIndex()}
			since = fmt.Sprintf(" since it received it on %s (entry %d)", c.GetAt().AsTime().UTC().Format(time.DateOnly), c.GetIndex())
		}
		f.add(pb.FindingKind_FINDING_KIND_DATACENTRE_RESALE, pb.Severity_SEVERITY_MEDIUM, dest, on, related,
			"shipped on by %s, a datacentre that has not installed it%s, to %s in %s", actor, since, consigneeID, orUnknown(dest))
	}
	if h := st.GetHubArrival(); h != nil && dest != "" && dest != h.GetCountry() {
		dwell := ev.GetOccurredAt().AsTime().Sub(h.GetReceivedAt().AsTime())
		parts := []string{consigneeID}
		if h.GetShipper() != "" {
			parts = append(parts, h.GetShipper())
		}
		switch {
		case dwell <= pol.HubDwell():
			f.add(pb.FindingKind_FINDING_KIND_TRANSSHIPMENT_HUB, pb.Severity_SEVERITY_HIGH, dest, parts, []uint64{h.GetIndex()},
				"received in %s, a watched transshipment hub, on %s (entry %d) and shipped on by %s to %s in %s %s later (hub dwell %s)",
				h.GetCountry(), h.GetReceivedAt().AsTime().UTC().Format(time.DateOnly), h.GetIndex(), actor, consigneeID, dest, span(dwell), span(pol.HubDwell()))
		case dest != h.GetShippedFor():
			f.add(pb.FindingKind_FINDING_KIND_TRANSSHIPMENT_HUB, pb.Severity_SEVERITY_MEDIUM, dest, parts, []uint64{h.GetIndex()},
				"re-exported by %s from %s, a watched transshipment hub, to %s in %s; it was shipped to %s for %s (entry %d) %s earlier",
				actor, h.GetCountry(), consigneeID, dest, h.GetCountry(), orUnknown(h.GetShippedFor()), h.GetIndex(), span(dwell))
		}
	}
}

// resale records a change of custodian and flags RAPID_RESALE when there have
// been more than the policy allows within its window.
func resale(next, st *pb.SerialState, s Step, pol Policy, f *flagger) {
	max, window := int(pol.MaxCustodyChanges()), pol.ResaleWindow()
	at := s.Event.GetOccurredAt().AsTime()
	var recent []*pb.CustodyChange
	for _, c := range st.GetCustodyChanges() {
		if !c.GetAt().AsTime().Before(at.Add(-window)) {
			recent = append(recent, c)
		}
	}
	recent = append(recent, &pb.CustodyChange{Custodian: s.Actor.GetId(), Index: s.Index, At: s.Event.GetOccurredAt()})
	if len(recent) > max+1 {
		recent = recent[len(recent)-max-1:]
	}
	next.CustodyChanges = recent
	if max == 0 || len(recent) <= max {
		return
	}
	var parts []string
	var related []uint64
	chain := ""
	for i, c := range recent {
		if i < len(recent)-1 {
			related = append(related, c.GetIndex())
			parts = append(parts, c.GetCustodian())
		}
		chain += fmt.Sprintf(", %s %s", c.GetCustodian(), c.GetAt().AsTime().UTC().Format(time.DateOnly))
	}
	f.add(pb.FindingKind_FINDING_KIND_RAPID_RESALE, pb.Severity_SEVERITY_HIGH, s.Event.GetLocation().GetCountry(), parts, related,
		"changed custodian %d times within %s (limit %d):%s", len(recent), span(at.Sub(recent[0].GetAt().AsTime())), max, chain[1:])
}

// misstep flags an event by a party with standing that is not an act it may
// perform in the serial's state.
func misstep(st *pb.SerialState, s Step, standing Standing, f *flagger) *Error {
	ev, actor := s.Event, s.Actor.GetId()
	country := ev.GetLocation().GetCountry()
	switch ev.GetType() {
	case pb.EventType_EVENT_TYPE_ATTESTED:
		f.add(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.Severity_SEVERITY_HIGH, country, nil, []uint64{st.GetCustodyIndex()},
			"attested by %s, but the GPU is not installed (%s)", actor, describeHolder(st))
	case pb.EventType_EVENT_TYPE_RECEIVED:
		f.add(pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH, pb.Severity_SEVERITY_HIGH, country, nil, []uint64{st.GetCustodyIndex()},
			"received by %s as %s, which is not a receipt the record allows (%s)", actor, standing, describeHolder(st))
	case pb.EventType_EVENT_TYPE_REPORTED_LOST:
		f.add(pb.FindingKind_FINDING_KIND_REPORTED_LOST, pb.Severity_SEVERITY_MEDIUM, country, holders(st), []uint64{st.GetCustodyIndex()},
			"reported lost again by %s (%s)", actor, describeHolder(st))
	default:
		return Reject(Forbidden, ReasonNotCustodian, "%s may not record %s: %s", actor, typeName(ev.GetType()), describeHolder(st))
	}
	return nil
}

// evidence flags an event by a party without standing: it is stored as
// evidence and moves nothing but the chain head (and, for a receipt, records
// the rival claim).
func evidence(next, st *pb.SerialState, s Step, standing Standing, f *flagger) {
	ev, actor := s.Event, s.Actor.GetId()
	country := ev.GetLocation().GetCountry()
	parts, related := holders(st), []uint64{st.GetCustodyIndex()}
	if sh := st.GetOpenShipment(); sh != nil {
		related = []uint64{sh.GetShippedIndex()}
	}
	switch ev.GetType() {
	case pb.EventType_EVENT_TYPE_RECEIVED:
		detail := fmt.Sprintf("received by %s with no shipment open (%s)", actor, describeHolder(st))
		if sh := st.GetOpenShipment(); sh != nil {
			detail = fmt.Sprintf("received by %s, but %s shipped it to %s (entry %d); custody stays in dispute until %s receives it",
				actor, sh.GetShipper(), sh.GetConsignee(), sh.GetShippedIndex(), sh.GetConsignee())
		}
		f.add(pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH, pb.Severity_SEVERITY_HIGH, country, parts, related, "%s", detail)
		c := &pb.Claim{Claimant: actor, Index: s.Index, ClaimedAt: ev.GetOccurredAt(), Location: cloneLocation(ev.GetLocation())}
		next.Claims = slices.DeleteFunc(next.Claims, func(o *pb.Claim) bool { return o.GetClaimant() == actor })
		next.Claims = append(next.Claims, c)
	case pb.EventType_EVENT_TYPE_ATTESTED:
		f.add(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.Severity_SEVERITY_HIGH, country, parts, related,
			"attested by %s at %s, which does not hold it (%s)", actor, placeName(ev.GetLocation()), describeHolder(st))
	case pb.EventType_EVENT_TYPE_REPORTED_LOST:
		f.add(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, pb.Severity_SEVERITY_HIGH, country, parts, related,
			"loss reported by %s, which neither holds nor shipped it (%s); the record stands", actor, describeHolder(st))
		f.add(pb.FindingKind_FINDING_KIND_REPORTED_LOST, pb.Severity_SEVERITY_MEDIUM, country, parts, related,
			"reported lost by %s, which does not hold it (%s)", actor, describeHolder(st))
	default: // a claimant acting as if it held the GPU
		sev := pb.Severity_SEVERITY_HIGH
		if ev.GetType() == pb.EventType_EVENT_TYPE_DESTROYED || ev.GetType() == pb.EventType_EVENT_TYPE_SHIPPED {
			sev = pb.Severity_SEVERITY_CRITICAL
		}
		var claimIdx uint64
		for _, c := range st.GetClaims() {
			if c.GetClaimant() == actor {
				claimIdx = c.GetIndex()
			}
		}
		f.add(pb.FindingKind_FINDING_KIND_CUSTODY_BREAK, sev, country, parts, append(related, claimIdx),
			"%s recorded %s on a GPU it claims (entry %d) but does not hold (%s); the record stands", actor, typeName(ev.GetType()), claimIdx, describeHolder(st))
	}
}

// holders are the parties the record gives the GPU to.
func holders(st *pb.SerialState) []string {
	if sh := st.GetOpenShipment(); sh != nil && st.GetState() != pb.CustodyState_CUSTODY_STATE_IN_CUSTODY {
		return []string{sh.GetShipper(), sh.GetConsignee()}
	}
	return []string{st.GetCustodian()}
}

// checkSite rejects an event that names a site its actor has not registered.
func checkSite(ev *pb.CustodyEvent, actor *pb.Participant) *Error {
	id := ev.GetLocation().GetSiteId()
	if id == "" || siteOf(actor, id) != nil {
		return nil
	}
	var ids []string
	for _, s := range actor.GetSites() {
		ids = append(ids, s.GetId())
	}
	known := "it has registered no sites; leave site_id empty"
	if len(ids) > 0 {
		known = "its sites are " + fmt.Sprint(ids)
	}
	e := Reject(Malformed, ReasonUnknownSite, "location.site_id %s is not a site of %s (%s)", Quote(id), actor.GetId(), known)
	e.Field = "location.site_id"
	return e
}

func siteOf(p *pb.Participant, id string) *pb.Site {
	for _, s := range p.GetSites() {
		if s.GetId() == id {
			return s
		}
	}
	return nil
}

// siteFlags flags an event whose country or coordinates contradict the
// registered site it names.
func siteFlags(ev *pb.CustodyEvent, actor *pb.Participant, f *flagger) {
	l := ev.GetLocation()
	site := siteOf(actor, l.GetSiteId())
	if site == nil {
		return
	}
	if site.GetCountry() != l.GetCountry() {
		f.add(pb.FindingKind_FINDING_KIND_LOCATION_MISMATCH, pb.Severity_SEVERITY_HIGH, l.GetCountry(), nil, nil,
			"%s by %s names its site %s, registered in %s, but gives the country %s", typeName(ev.GetType()), actor.GetId(), site.GetId(), site.GetCountry(), l.GetCountry())
		return
	}
	if d, ok := siteDistance(l, site); ok && d > MinTravelM {
		f.add(pb.FindingKind_FINDING_KIND_LOCATION_MISMATCH, pb.Severity_SEVERITY_HIGH, l.GetCountry(), nil, nil,
			"%s by %s names its site %s but gives coordinates %d km from it", typeName(ev.GetType()), actor.GetId(), site.GetId(), d/1000)
	}
}

func locationFlags(ev *pb.CustodyEvent, pol Policy, f *flagger) {
	if c := ev.GetLocation().GetCountry(); pol.Class(c) == pb.CountryClass_COUNTRY_CLASS_RESTRICTED {
		f.add(pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION, pb.Severity_SEVERITY_CRITICAL, c, nil, nil,
			"%s by %s located in %s, a restricted destination", typeName(ev.GetType()), ev.GetActor(), c)
	}
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

func orUnknown(c string) string {
	if c == "" {
		return "an unknown country"
	}
	return c
}

// span renders a duration in days (or hours, below two days).
func span(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%d hours", int64(d/time.Hour))
	}
	return fmt.Sprintf("%d days", int64(d/(24*time.Hour)))
}

func describeHolder(st *pb.SerialState) string {
	switch st.GetState() {
	case pb.CustodyState_CUSTODY_STATE_IN_TRANSIT:
		return fmt.Sprintf("it is in transit from %s to %s", st.GetOpenShipment().GetShipper(), st.GetOpenShipment().GetConsignee())
	case pb.CustodyState_CUSTODY_STATE_INSTALLED:
		return fmt.Sprintf("it is installed by %s at %s", st.GetCustodian(), placeName(st.GetInstallSite()))
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

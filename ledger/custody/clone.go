package custody

import (
	"bytes"
	"slices"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// stateWithoutFindings is a deep copy of a serial's state without its open
// findings (output only, which Next leaves out of the state it makes): what
// proto.Clone gives with OpenFindings cleared, without its reflective walk,
// which was a fifth of the rules' cost when verify --all replays every
// event. A message carrying unknown fields (a state written by a newer
// version) is copied by proto.Clone, which keeps them. TestStateClone holds
// it to proto.Clone for every field, so a field added to SerialState (or to
// a message in it) fails the test until it is copied here.
func stateWithoutFindings(st *pb.SerialState) *pb.SerialState {
	if st == nil {
		return nil
	}
	if unknown(st) {
		next := proto.Clone(st).(*pb.SerialState)
		next.OpenFindings = nil
		return next
	}
	return &pb.SerialState{
		Serial:               st.Serial,
		State:                st.State,
		Custodian:            st.Custodian,
		Location:             cloneLocation(st.Location),
		HeadHash:             bytes.Clone(st.HeadHash),
		EventCount:           st.EventCount,
		OpenShipment:         cloneShipment(st.OpenShipment),
		Model:                st.Model,
		Eccn:                 st.Eccn,
		Manufacturer:         st.Manufacturer,
		InstallSite:          cloneLocation(st.InstallSite),
		FirstIndex:           st.FirstIndex,
		LastIndex:            st.LastIndex,
		LastEventAt:          cloneTime(st.LastEventAt),
		LastAttestedAt:       cloneTime(st.LastAttestedAt),
		ParentSerial:         st.ParentSerial,
		CustodyAt:            cloneTime(st.CustodyAt),
		CustodyIndex:         st.CustodyIndex,
		InstallIndex:         st.InstallIndex,
		Claims:               cloneAll(st.Claims, cloneClaim),
		HubArrival:           cloneHubArrival(st.HubArrival),
		CustodyChanges:       cloneAll(st.CustodyChanges, cloneCustodyChange),
		InstalledByCustodian: st.InstalledByCustodian,
		Budgets:              cloneAll(st.Budgets, cloneBudget),
	}
}

func unknown(m proto.Message) bool { return len(m.ProtoReflect().GetUnknown()) > 0 }

// cloneAll copies a repeated field element by element (nil stays nil, as
// proto.Clone leaves it).
func cloneAll[T any](s []*T, clone func(*T) *T) []*T {
	if s == nil {
		return nil
	}
	out := slices.Clone(s)
	for i, m := range out {
		out[i] = clone(m)
	}
	return out
}

func cloneTime(t *timestamppb.Timestamp) *timestamppb.Timestamp {
	if t == nil || unknown(t) {
		return clone(t)
	}
	return &timestamppb.Timestamp{Seconds: t.Seconds, Nanos: t.Nanos}
}

func cloneLocation(l *pb.Location) *pb.Location {
	if l == nil || unknown(l) {
		return clone(l)
	}
	c := &pb.Location{Country: l.Country, SiteId: l.SiteId}
	if l.LatitudeE6 != nil {
		c.LatitudeE6 = proto.Int32(*l.LatitudeE6)
	}
	if l.LongitudeE6 != nil {
		c.LongitudeE6 = proto.Int32(*l.LongitudeE6)
	}
	return c
}

func cloneShipment(s *pb.Shipment) *pb.Shipment {
	if s == nil || unknown(s) {
		return clone(s)
	}
	return &pb.Shipment{Shipper: s.Shipper, Consignee: s.Consignee, DestinationCountry: s.DestinationCountry,
		ShippedIndex: s.ShippedIndex, ShippedAt: cloneTime(s.ShippedAt), ExportLicense: s.ExportLicense}
}

func cloneClaim(c *pb.Claim) *pb.Claim {
	if c == nil || unknown(c) {
		return clone(c)
	}
	return &pb.Claim{Claimant: c.Claimant, Index: c.Index, ClaimedAt: cloneTime(c.ClaimedAt), Location: cloneLocation(c.Location)}
}

func cloneHubArrival(h *pb.HubArrival) *pb.HubArrival {
	if h == nil || unknown(h) {
		return clone(h)
	}
	return &pb.HubArrival{Country: h.Country, Index: h.Index, ReceivedAt: cloneTime(h.ReceivedAt), ShippedFor: h.ShippedFor, Shipper: h.Shipper}
}

func cloneCustodyChange(c *pb.CustodyChange) *pb.CustodyChange {
	if c == nil || unknown(c) {
		return clone(c)
	}
	return &pb.CustodyChange{Custodian: c.Custodian, Index: c.Index, At: cloneTime(c.At)}
}

func cloneBudget(b *pb.ByteBudget) *pb.ByteBudget {
	if b == nil || unknown(b) {
		return clone(b)
	}
	return &pb.ByteBudget{Participant: b.Participant, RefilledAtNs: b.RefilledAtNs, BytesLeft: b.BytesLeft}
}

// clone is proto.Clone keeping the type (and nil as nil).
func clone[T proto.Message](m T) T {
	var zero T
	if any(m) == any(zero) {
		return zero
	}
	return proto.Clone(m).(T)
}

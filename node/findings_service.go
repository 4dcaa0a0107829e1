package node

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/grpc"
)

func checkSeverity(s pb.Severity) error {
	if _, ok := pb.Severity_name[int32(s)]; !ok {
		return invalid(fmt.Sprintf("min_severity: %d is not a severity (0 to %d)", s, len(pb.Severity_name)-1))
	}
	return nil
}

func checkKinds(kinds []pb.FindingKind) error {
	for _, k := range kinds {
		if _, ok := pb.FindingKind_name[int32(k)]; !ok || k == pb.FindingKind_FINDING_KIND_UNSPECIFIED {
			return invalid(fmt.Sprintf("kinds: %d is not a finding kind", k))
		}
	}
	return nil
}

func (s *auditService) ListFindings(ctx context.Context, req *pb.ListFindingsRequest) (*pb.ListFindingsResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if err := checkKinds(req.GetKinds()); err != nil {
		return nil, err
	}
	if err := checkSeverity(req.GetMinSeverity()); err != nil {
		return nil, err
	}
	if c := req.GetCountry(); c != "" && !custody.ValidCountry(c) {
		return nil, invalid(fmt.Sprintf("country %s: want an ISO 3166-1 alpha-2 code such as DE", custody.Quote(c)))
	}
	tok, err := parsePageToken("findings", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	after, err := hex.DecodeString(tok)
	if err != nil {
		return nil, invalid("page_token is not one this method issued; pass next_page_token back unchanged")
	}
	asOf := time.Now()
	if req.GetAsOf() != nil {
		if err := req.GetAsOf().CheckValid(); err != nil {
			return nil, invalid("as_of: " + err.Error())
		}
		asOf = req.GetAsOf().AsTime()
	}
	fs, next, err := s.n.ledger.Findings(ctx, ledger.FindingQuery{
		Filter: gaps.Filter{Kinds: req.GetKinds(), MinSeverity: req.GetMinSeverity(), Serial: req.GetSerial(),
			Participant: req.GetParticipant(), Country: req.GetCountry(), IncludeResolved: req.GetIncludeResolved()},
		AsOf: asOf, After: after, Limit: limit, MaxScan: maxScan,
	})
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	fs = slices.DeleteFunc(fs, func(f *pb.Finding) bool { return !s.n.findingVisible(ctx, f) })
	out := &pb.ListFindingsResponse{Findings: fs}
	if next != nil {
		out.NextPageToken = pageToken("findings", hex.EncodeToString(next))
	}
	return out, nil
}

// WatchFindings streams findings as they arise: those of each newly applied
// entry, and time-based ones as their windows run out (checked every second).
func (s *auditService) WatchFindings(req *pb.WatchFindingsRequest, stream grpc.ServerStreamingServer[pb.WatchFindingsResponse]) error {
	ctx := stream.Context()
	if err := checkKinds(req.GetKinds()); err != nil {
		return err
	}
	if err := checkSeverity(req.GetMinSeverity()); err != nil {
		return err
	}
	want := func(f *pb.Finding) bool {
		if f.GetSeverity() < req.GetMinSeverity() {
			return false
		}
		if len(req.GetKinds()) == 0 {
			return true
		}
		for _, k := range req.GetKinds() {
			if k == f.GetKind() {
				return true
			}
		}
		return false
	}
	w, err := s.n.watch.subscribe(clientOf(ctx))
	if err != nil {
		return err
	}
	defer s.n.watch.unsubscribe(w)
	for {
		select {
		case f := <-w.ch:
			if !want(f) || !s.n.findingVisible(ctx, f) {
				continue
			}
			if err := stream.Send(&pb.WatchFindingsResponse{Finding: f}); err != nil {
				return err
			}
		case <-w.slow:
			return exhausted(ReasonTooSlow, fmt.Sprintf("this stream fell %d findings behind and was cut off; reconnect, and catch up with ListFindings", watchBuffer), time.Second)
		case <-ctx.Done():
			return nil
		case <-s.n.stop:
			return toStatus(ctx, s.n.log, errUnavailable{"node is shutting down"})
		}
	}
}

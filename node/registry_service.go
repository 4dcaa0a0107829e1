package node

import (
	"context"
	"fmt"
	"sort"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
)

type registryService struct {
	gpuledgerv1grpc.UnimplementedRegistryServiceServer
	n *Node
}

func (s *registryService) ListParticipants(ctx context.Context, req *pb.ListParticipantsRequest) (*pb.ListParticipantsResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := parsePageToken("participants", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	all := s.n.ledger.Registry().Participants()
	start := sort.Search(len(all), func(i int) bool { return all[i].GetId() > after })
	end := min(len(all), start+limit)
	out := &pb.ListParticipantsResponse{Participants: all[start:end]}
	if end < len(all) {
		out.NextPageToken = pageToken("participants", all[end-1].GetId())
	}
	return out, nil
}

func (s *registryService) GetParticipant(ctx context.Context, req *pb.GetParticipantRequest) (*pb.GetParticipantResponse, error) {
	p := s.n.ledger.Registry().Participant(req.GetId())
	if p == nil {
		return nil, toStatus(ctx, s.n.log, fmt.Errorf("participant %s: %w", custody.Quote(req.GetId()), ledger.ErrNotFound))
	}
	return &pb.GetParticipantResponse{Participant: p}, nil
}

func (s *registryService) GetPolicy(ctx context.Context, req *pb.GetPolicyRequest) (*pb.GetPolicyResponse, error) {
	return &pb.GetPolicyResponse{Policy: s.n.ledger.Registry().Policy().Proto()}, nil
}

func (s *registryService) ListRegistryChanges(ctx context.Context, req *pb.ListRegistryChangesRequest) (*pb.ListRegistryChangesResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	from, err := parseUintToken("registry", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	es, next, err := s.n.ledger.RegistryEntries(ctx, from, limit)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	out := &pb.ListRegistryChangesResponse{Entries: es}
	if next != 0 {
		out.NextPageToken = pageToken("registry", fmt.Sprint(next))
	}
	return out, nil
}

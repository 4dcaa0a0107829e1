package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

type ledgerService struct {
	gpuledgerv1grpc.UnimplementedLedgerServiceServer
	n *Node
}

func (s *ledgerService) Append(ctx context.Context, req *pb.AppendRequest) (*pb.AppendResponse, error) {
	if err := s.n.noSpace(); err != nil {
		return nil, err
	}
	if c, err := s.n.leaderConn(ctx); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	} else if c != nil {
		resp, err := gpuledgerv1grpc.NewLedgerServiceClient(c).Append(forwardCtx(ctx), req)
		return resp, s.n.forwarded(ctx, err)
	}
	raw, err := marshalEnvelope(req.GetEnvelope())
	if err != nil {
		return nil, err
	}
	rs, err := s.n.submit(ctx, [][]byte{raw})
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if rs[0].Err != nil {
		return nil, toStatus(ctx, s.n.log, rs[0].Err)
	}
	receipts, err := s.n.receipts(ctx, rs)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	return &pb.AppendResponse{Receipt: receipts[0]}, nil
}

func (s *ledgerService) AppendBatch(ctx context.Context, req *pb.AppendBatchRequest) (*pb.AppendBatchResponse, error) {
	envs := req.GetEnvelopes()
	if len(envs) == 0 {
		return nil, invalid("envelopes is empty")
	}
	if len(envs) > s.n.cfg.MaxBatchEnvelopes {
		return nil, toStatus(ctx, s.n.log, custody.Reject(custody.TooLarge, custody.ReasonTooLarge,
			"batch of %d envelopes; at most %d: split it", len(envs), s.n.cfg.MaxBatchEnvelopes))
	}
	if err := s.n.noSpace(); err != nil {
		return nil, err
	}
	if c, err := s.n.leaderConn(ctx); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	} else if c != nil {
		resp, err := gpuledgerv1grpc.NewLedgerServiceClient(c).AppendBatch(forwardCtx(ctx), req)
		return resp, s.n.forwarded(ctx, err)
	}
	raws := make([][]byte, len(envs))
	for i, e := range envs {
		var err error
		if raws[i], err = marshalEnvelope(e); err != nil {
			return nil, invalid(fmt.Sprintf("envelopes[%d]: %v", i, err))
		}
	}
	rs, err := s.n.submit(ctx, raws)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	receipts, err := s.n.receipts(ctx, rs)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	out := &pb.AppendBatchResponse{Results: make([]*pb.AppendResult, len(rs))}
	for i, r := range rs {
		var rej *custody.Error
		switch {
		case errors.As(r.Err, &rej):
			out.Results[i] = &pb.AppendResult{Result: &pb.AppendResult_Error{Error: appendError(rej)}}
		case r.Err != nil:
			return nil, toStatus(ctx, s.n.log, r.Err)
		default:
			out.Results[i] = &pb.AppendResult{Result: &pb.AppendResult_Receipt{Receipt: receipts[i]}}
		}
	}
	return out, nil
}

// receipts builds a receipt for each accepted result: a signed checkpoint
// that includes the entries and their inclusion proofs to it (read together,
// so shared Merkle nodes are read once). Rejected results get nil.
func (n *Node) receipts(ctx context.Context, rs []ledger.Result) ([]*pb.Receipt, error) {
	cp, err := n.ledger.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	var idx []uint64
	for _, r := range rs {
		if r.Err == nil {
			idx = append(idx, r.Entry.GetIndex())
		}
	}
	proofs, err := n.ledger.InclusionProofs(ctx, idx, cp.GetSize())
	if err != nil {
		return nil, err
	}
	out := make([]*pb.Receipt, len(rs))
	k := 0
	for i, r := range rs {
		if r.Err != nil {
			continue
		}
		e := r.Entry
		out[i] = &pb.Receipt{Index: e.GetIndex(), EntryHash: e.GetEntryHash(), LeafHash: e.GetLeafHash(), AcceptedAt: e.GetAcceptedAt(),
			Checkpoint: cp, InclusionProof: proofs[k], Flags: e.GetFlags(), Duplicate: r.Duplicate}
		k++
	}
	return out, nil
}

func (s *ledgerService) GetSerial(ctx context.Context, req *pb.GetSerialRequest) (*pb.GetSerialResponse, error) {
	if !custody.ValidSerial(req.GetSerial()) {
		return nil, invalid(fmt.Sprintf("serial %s: want 1 to 64 characters of A-Z a-z 0-9 . _ : / -", custody.Quote(req.GetSerial())))
	}
	party, err := s.n.visible(ctx, req.GetSerial())
	if err != nil {
		return nil, err
	}
	if err := s.n.waitSize(ctx, req.GetMinIndex()); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	size := s.n.ledger.Size()
	st, err := s.n.ledger.Serial(ctx, req.GetSerial())
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if st.OpenFindings, err = s.n.ledger.SerialFindings(ctx, req.GetSerial(), time.Now(), false); err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	s.n.redact(ctx, st, party)
	out := &pb.GetSerialResponse{Serial: st, AppliedSize: size}
	if out.MapProof, out.MapCheckpoint, err = s.n.serialMapProof(ctx, req.GetSerial()); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *ledgerService) ListSerialEvents(ctx context.Context, req *pb.ListSerialEventsRequest) (*pb.ListSerialEventsResponse, error) {
	if !custody.ValidSerial(req.GetSerial()) {
		return nil, invalid(fmt.Sprintf("serial %s: want 1 to 64 characters of A-Z a-z 0-9 . _ : / -", custody.Quote(req.GetSerial())))
	}
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	from, err := parseUintToken("events", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	party, err := s.n.visible(ctx, req.GetSerial())
	if err != nil {
		return nil, err
	}
	from = max(from, party.Position)
	es, next, err := s.n.ledger.SerialHistoryPage(ctx, req.GetSerial(), from, limit, maxPageBytes)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if k := s.n.cfg.WithholdLast; k > 0 && next == 0 { // a lying node, for tests
		es = es[:max(0, len(es)-k)]
	}
	out := &pb.ListSerialEventsResponse{Entries: es, FirstPosition: from}
	if req.GetPageToken() == "" {
		if out.MapProof, out.MapCheckpoint, err = s.n.serialMapProof(ctx, req.GetSerial()); err != nil {
			return nil, err
		}
	}
	if next != 0 {
		out.NextPageToken = pageToken("events", fmt.Sprint(next))
	}
	return out, nil
}

func (s *ledgerService) GetEntry(ctx context.Context, req *pb.GetEntryRequest) (*pb.GetEntryResponse, error) {
	var e *pb.Entry
	var err error
	switch k := req.GetKey().(type) {
	case *pb.GetEntryRequest_Index:
		e, err = s.n.ledger.Entry(ctx, k.Index)
	case *pb.GetEntryRequest_EntryHash:
		if len(k.EntryHash) != 32 {
			return nil, invalid(fmt.Sprintf("entry_hash is %d bytes; want 32 (SHA-256 of the envelope)", len(k.EntryHash)))
		}
		e, err = s.n.ledger.EntryByHash(ctx, k.EntryHash)
	default:
		return nil, invalid("set index or entry_hash")
	}
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if err := s.n.entryVisible(ctx, e); err != nil {
		return nil, err
	}
	return &pb.GetEntryResponse{Entry: e}, nil
}

func (s *ledgerService) StreamEntries(req *pb.StreamEntriesRequest, stream grpc.ServerStreamingServer[pb.StreamEntriesResponse]) error {
	ctx := stream.Context()
	if req.GetBatch() > maxPageSize {
		return invalid(fmt.Sprintf("batch %d: at most %d entries a message", req.GetBatch(), maxPageSize))
	}
	next := req.GetStartIndex()
	for {
		wake := s.n.waitApplied()
		size := s.n.ledger.Size()
		if next < size {
			var err error
			if req.GetEnvelopesOnly() {
				err = streamStored(ctx, s.n.ledger, next, size, int(req.GetBatch()), stream)
			} else {
				err = streamDecoded(ctx, s.n.ledger, next, size, int(req.GetBatch()), stream)
			}
			if err != nil {
				return toStatus(ctx, s.n.log, err)
			}
			next = size
			continue
		}
		if !req.GetFollow() {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		case <-s.n.stop:
			return toStatus(ctx, s.n.log, errUnavailable{"node is shutting down"})
		}
	}
}

// streamDecoded sends entries [from, to) decoded, batch at a time (one
// entry a message when batch is 0 or 1).
func streamDecoded(ctx context.Context, l *ledger.Ledger, from, to uint64, batch int, stream grpc.ServerStreamingServer[pb.StreamEntriesResponse]) error {
	var entries []*pb.Entry
	var size int
	flush := func() error {
		if len(entries) == 0 {
			return nil
		}
		err := stream.Send(&pb.StreamEntriesResponse{Entries: entries})
		entries, size = nil, 0
		return err
	}
	err := l.Entries(ctx, from, to, func(e *pb.Entry) error {
		if batch <= 1 {
			return stream.Send(&pb.StreamEntriesResponse{Entry: e})
		}
		entries, size = append(entries, e), size+len(e.GetEnvelope())
		if len(entries) >= batch || size >= maxStreamBatchBytes {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// maxStreamBatchBytes is where a batch of StreamEntries stops short of
// batch entries.
const maxStreamBatchBytes = 1 << 20

// streamStored sends entries [from, to) as stored (envelopes_only), in
// messages built from the stored bytes: each entry's stored encoding (an
// Entry with accepted_at, envelope and flags) with its index appended, which
// protobuf decodes as one Entry; the node neither decodes nor re-encodes
// them.
func streamStored(ctx context.Context, l *ledger.Ledger, from, to uint64, batch int, stream grpc.ServerStream) error {
	field := protowire.Number(2) // StreamEntriesResponse.entries
	if batch <= 1 {
		field, batch = 1, 1 // .entry
	}
	var msg []byte
	var n, last int
	flush := func() error {
		if n == 0 {
			return nil
		}
		err := stream.SendMsg(preEncoded(msg)) // gRPC may write it after SendMsg returns: a new buffer each time
		msg, n, last = nil, 0, len(msg)
		return err
	}
	err := l.EntriesStored(ctx, from, to, func(i uint64, stored []byte) error {
		if msg == nil && last > 0 {
			// About as long as the message before: one allocation, not a
			// dozen grown and copied (a tenth of the node's CPU in a stream).
			msg = make([]byte, 0, last+last/8)
		}
		size := len(stored)
		if i != 0 {
			size += protowire.SizeTag(1) + protowire.SizeVarint(i)
		}
		msg = protowire.AppendTag(msg, field, protowire.BytesType)
		msg = protowire.AppendVarint(msg, uint64(size))
		msg = append(msg, stored...)
		if i != 0 {
			msg = protowire.AppendTag(msg, 1, protowire.VarintType) // Entry.index
			msg = protowire.AppendVarint(msg, i)
		}
		if n++; n >= batch || len(msg) >= maxStreamBatchBytes {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

func (s *ledgerService) ListSerials(ctx context.Context, req *pb.ListSerialsRequest) (*pb.ListSerialsResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := parsePageToken("serials", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if c := req.GetCountry(); c != "" && !custody.ValidCountry(c) {
		return nil, invalid(fmt.Sprintf("country %s: want an ISO 3166-1 alpha-2 code such as DE", custody.Quote(c)))
	}
	f := ledger.SerialFilter{Custodian: req.GetCustodian(), State: req.GetState(), Country: req.GetCountry(), Model: req.GetModel()}
	if c := callerOf(ctx); s.n.cfg.ReadScope == ScopeScoped && c != nil && !c.all() {
		f.Party = c.participant // the serials it has been party to, alone
	}
	sts, next, err := s.n.ledger.Serials(ctx, f, after, limit, maxScan)
	if err != nil {
		return nil, toStatus(ctx, s.n.log, err)
	}
	if f.Party != "" {
		for _, st := range sts {
			p, err := s.n.ledger.PartyOf(ctx, f.Party, st.GetSerial())
			if err != nil {
				return nil, toStatus(ctx, s.n.log, err)
			}
			s.n.redact(ctx, st, p)
		}
	}
	out := &pb.ListSerialsResponse{Serials: sts}
	if next != "" {
		out.NextPageToken = pageToken("serials", next)
	}
	return out, nil
}

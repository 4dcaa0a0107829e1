package node

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ErrorDomain is the ErrorInfo domain of every gpuledger error.
const ErrorDomain = "gpuledger.dev"

// Reasons the node adds to the ledger's.
const (
	ReasonNoLeader    = "NO_LEADER"
	ReasonBadRequest  = "BAD_REQUEST"
	ReasonNotFound    = "NOT_FOUND"
	ReasonStale       = "STALE_READ"
	ReasonInternal    = "INTERNAL"
	ReasonUnsupported = "UNSUPPORTED"
	// ReasonMalformedRequest: the request bytes are not the method's
	// protobuf message.
	ReasonMalformedRequest = "MALFORMED_REQUEST"
)

var codeOf = map[custody.Code]codes.Code{
	custody.Malformed:       codes.InvalidArgument,
	custody.Unauthenticated: codes.Unauthenticated,
	custody.Forbidden:       codes.PermissionDenied,
	custody.StaleHead:       codes.Aborted,
	custody.Exists:          codes.AlreadyExists,
	custody.NotFound:        codes.NotFound,
	custody.TooLarge:        codes.ResourceExhausted,
	custody.Precondition:    codes.FailedPrecondition,
}

// errUnavailable is returned while the node cannot sequence writes.
type errUnavailable struct{ msg string }

func (e errUnavailable) Error() string { return e.msg }

// invalid is a node-level INVALID_ARGUMENT error.
func invalid(msg string) error {
	return withInfo(codes.InvalidArgument, ReasonBadRequest, msg, nil)
}

func withInfo(c codes.Code, reason, msg string, meta map[string]string) error {
	st := status.New(c, msg)
	d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta})
	if err != nil {
		return st.Err()
	}
	return d.Err()
}

// toStatus maps any error of the node, ledger or raft to a gRPC status with
// one ErrorInfo. It is the only place that knows the mapping. Unknown errors
// become Internal with a generic message; the cause is logged, not returned.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	var rej *custody.Error
	var un errUnavailable
	switch {
	case errors.As(err, &rej):
		var meta map[string]string
		if rej.Code == custody.StaleHead {
			meta = map[string]string{"current_head": hex.EncodeToString(rej.Head)}
		}
		if rej.Field != "" {
			meta = map[string]string{"field": rej.Field}
		}
		return withInfo(codeOf[rej.Code], rej.Reason, rej.Msg, meta)
	case errors.Is(err, ledger.ErrNotFound):
		return withInfo(codes.NotFound, ReasonNotFound, err.Error(), nil)
	case errors.Is(err, ledger.ErrInvalidArgument):
		return withInfo(codes.InvalidArgument, ReasonBadRequest, err.Error(), nil)
	case errors.As(err, &un), errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		st := status.New(codes.Unavailable, "no leader can sequence the write now ("+err.Error()+"); retry: appends are idempotent")
		d, derr := st.WithDetails(
			&errdetails.ErrorInfo{Reason: ReasonNoLeader, Domain: ErrorDomain},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(500 * time.Millisecond)},
		)
		if derr != nil {
			return st.Err()
		}
		return d.Err()
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	log.ErrorContext(ctx, "internal error", "err", err)
	return withInfo(codes.Internal, ReasonInternal, "internal error; the node's log has the cause", nil)
}

// appendError turns a per-envelope rejection into its AppendBatch form.
func appendError(rej *custody.Error) *pb.AppendError {
	return &pb.AppendError{Code: int32(codeOf[rej.Code]), Reason: rej.Reason, Message: rej.Msg, CurrentHead: rej.Head}
}

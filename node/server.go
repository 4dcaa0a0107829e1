package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// Message-size limits of the gRPC server: a full batch plus framing.
const MaxRecvMsgBytes = ledger.DefaultMaxBatchBytes + 1<<20

// ServerOptions returns the gRPC server options a node needs: message
// limits, and interceptors that refuse the ledger's RPCs while the node has
// raised its alarm and mark reads with the applied size and staleness.
// Callers add their own (TLS, more interceptors).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxRecvMsgBytes), grpc.MaxSendMsgSize(64 << 20), grpc.ForceServerCodecV2(newCanonicalCodec()),
		grpc.ChainUnaryInterceptor(guardUnary), grpc.ChainStreamInterceptor(guardStream),
		// Writes of 256 KiB (gRPC's default is 32): a reader of the whole log
		// costs the node an eighth of the write calls. The buffer is the
		// connection's only while it writes.
		grpc.WriteBufferSize(256 << 10), grpc.SharedWriteBuffer(true),
		// Admission control (admission.go): calls per connection, the
		// handshake's deadline, pings no more often than every 10 s, idle
		// connections closed after 15 minutes, dead ones found in 2.
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 15 * time.Minute, Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}
}

// NewServer returns a gRPC server for the node, its services registered:
// ServerOptions, the node's TLS when it serves TLS, then opts.
func (n *Node) NewServer(opts ...grpc.ServerOption) *grpc.Server {
	o := ServerOptions()
	if n.tls != nil {
		o = append(o, grpc.Creds(credentials.NewTLS(n.tls)))
	}
	s := grpc.NewServer(append(o, opts...)...)
	n.Register(s)
	return s
}

// Register registers the node's services, grpc.health.v1 and server
// reflection on s.
func (n *Node) Register(s *grpc.Server) {
	gpuledgerv1grpc.RegisterLedgerServiceServer(s, &ledgerService{n: n})
	gpuledgerv1grpc.RegisterAuditServiceServer(s, &auditService{n: n})
	gpuledgerv1grpc.RegisterRegistryServiceServer(s, &registryService{n: n})
	gpuledgerv1grpc.RegisterClusterServiceServer(s, &clusterService{n: n})
	healthpb.RegisterHealthServer(s, n.health)
	registerReflection(s)
}

// Page sizes. A page also ends before maxPageBytes of entries (but holds
// one at least), so that it fits in a message whatever the entries carry.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
	maxPageBytes    = 4 << 20
	// maxScan bounds the index entries a list call examines: a filter
	// that matches little returns a short or empty page with a
	// next_page_token, so every call costs bounded work.
	maxScan = 10_000
)

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalid(fmt.Sprintf("page_size %d is negative", n))
	case n == 0:
		return defaultPageSize, nil
	}
	return min(int(n), maxPageSize), nil
}

// Page tokens are opaque to clients: base64url("<kind>:<position>").
func pageToken(kind, pos string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + pos))
}

func parsePageToken(kind, tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	pos, ok := strings.CutPrefix(string(b), kind+":")
	if err != nil || !ok {
		return "", invalid("page_token is not one this method issued; pass next_page_token back unchanged")
	}
	return pos, nil
}

func parseUintToken(kind, tok string) (uint64, error) {
	pos, err := parsePageToken(kind, tok)
	if err != nil || pos == "" {
		return 0, err
	}
	v, err := strconv.ParseUint(pos, 10, 64)
	if err != nil {
		return 0, invalid("page_token is not one this method issued; pass next_page_token back unchanged")
	}
	return v, nil
}

// waitSize waits (up to ReadWait) until the ledger has at least min entries.
func (n *Node) waitSize(ctx context.Context, min uint64) error {
	if min == 0 || n.ledger.Size() >= min {
		return nil
	}
	deadline := time.NewTimer(n.cfg.ReadWait)
	defer deadline.Stop()
	for n.ledger.Size() < min {
		select {
		case <-n.waitApplied():
		case <-deadline.C:
			return withInfo(codes.Unavailable, ReasonStale, fmt.Sprintf("this node has applied %d entries, fewer than min_index %d; retry or ask another node", n.ledger.Size(), min), nil)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// marshalEnvelope returns an envelope's stored form.
func marshalEnvelope(env *pb.Envelope) ([]byte, error) {
	if env == nil {
		return nil, invalid("envelope is required")
	}
	b, err := dsse.Marshal(env)
	if err != nil {
		return nil, invalid("envelope does not serialize: " + err.Error())
	}
	return b, nil
}

package node_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// retryOf is an error's RetryInfo delay, or 0.
func retryOf(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			return r.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// dialFrom connects to addr from the loopback address src, another client
// to the node.
func dialFrom(t *testing.T, src, addr string) *grpc.ClientConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestClientRate: a client past its rate is refused with RESOURCE_EXHAUSTED
// RATE_LIMITED and a RetryInfo; after that delay it is served again, and
// another client is served all along.
func TestClientRate(t *testing.T) {
	tn := startNodeWith(t, t.TempDir(), func(c *node.Config) { c.ClientRate = 50 })
	var refused error
	for range 300 {
		if _, err := tn.ac.GetCheckpoint(t.Context(), &pb.GetCheckpointRequest{}); err != nil {
			refused = err
			break
		}
	}
	if status.Code(refused) != codes.ResourceExhausted || reasonOf(refused) != "RATE_LIMITED" || retryOf(refused) <= 0 {
		t.Fatalf("300 calls at a limit of 50/s: %v, want RESOURCE_EXHAUSTED RATE_LIMITED with a RetryInfo", refused)
	}
	other := gpuledgerv1grpc.NewAuditServiceClient(dialFrom(t, "127.0.0.2", tn.addr))
	if _, err := other.GetCheckpoint(t.Context(), &pb.GetCheckpointRequest{}); err != nil {
		t.Errorf("another client: %v", err)
	}
	time.Sleep(retryOf(refused) + 20*time.Millisecond)
	if _, err := tn.ac.GetCheckpoint(t.Context(), &pb.GetCheckpointRequest{}); err != nil {
		t.Errorf("after the RetryInfo's delay: %v", err)
	}
}

// TestWatchStreamCaps: WatchFindings streams are capped per client and in
// all (RESOURCE_EXHAUSTED TOO_MANY_STREAMS with a RetryInfo); a closed
// stream frees its place; every open stream receives the findings of a
// new entry, read once for all.
func TestWatchStreamCaps(t *testing.T) {
	tn := startNodeWith(t, t.TempDir(), func(c *node.Config) { c.MaxWatchStreamsPerClient, c.MaxWatchStreams = 3, 4 })
	// open starts a stream and returns its findings as they come, or the
	// error it was refused with (a refusal arrives as the first message's
	// error; a stream that is taken sends nothing yet).
	open := func(c gpuledgerv1grpc.AuditServiceClient) (<-chan *pb.Finding, context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(t.Context())
		s, err := c.WatchFindings(ctx, &pb.WatchFindingsRequest{})
		if err != nil {
			return nil, cancel, err
		}
		found, errc := make(chan *pb.Finding, 16), make(chan error, 1)
		go func() {
			for {
				r, err := s.Recv()
				if err != nil {
					errc <- err
					return
				}
				found <- r.GetFinding()
			}
		}()
		select {
		case err = <-errc:
		case <-time.After(300 * time.Millisecond):
		}
		return found, cancel, err
	}
	var cancels []context.CancelFunc
	for i := range 3 {
		_, cancel, err := open(tn.ac)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		cancels = append(cancels, cancel)
	}
	_, cancel, err := open(tn.ac)
	cancel()
	if status.Code(err) != codes.ResourceExhausted || reasonOf(err) != "TOO_MANY_STREAMS" || retryOf(err) <= 0 {
		t.Fatalf("a fourth stream of one client: %v, want TOO_MANY_STREAMS", err)
	}
	other := gpuledgerv1grpc.NewAuditServiceClient(dialFrom(t, "127.0.0.2", tn.addr))
	s4, cancel4, err := open(other)
	if err != nil {
		t.Fatalf("another client's stream: %v", err)
	}
	defer cancel4()
	third := gpuledgerv1grpc.NewAuditServiceClient(dialFrom(t, "127.0.0.3", tn.addr))
	if _, cancel, err := open(third); status.Code(err) != codes.ResourceExhausted || reasonOf(err) != "TOO_MANY_STREAMS" {
		cancel()
		t.Fatalf("a fifth stream in all: %v, want TOO_MANY_STREAMS", err)
	} else {
		cancel()
	}
	cancels[0]()
	time.Sleep(100 * time.Millisecond)
	if _, cancel, err := open(third); err != nil {
		t.Fatalf("a stream after one closed: %v", err)
	} else {
		defer cancel()
	}
	// A finding reaches an open stream: a shipment to a restricted country.
	mfd := tn.append(t, sign(event("GPU-W", pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", nil)))
	tn.append(t, sign(event("GPU-W", pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", mfd.GetEntryHash(), func(e *pb.CustodyEvent) {
		e.Counterparty, e.DestinationCountry = "eu-dist", "KP"
	})))
	select {
	case f := <-s4:
		if f.GetSerial() != "GPU-W" {
			t.Errorf("the stream received %v", f)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no finding reached the open stream")
	}
}

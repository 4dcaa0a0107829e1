package node

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Admission control: what one client can make a node do.
//
//   - Connections: --max-connections (mux.go); per connection at most
//     maxStreamsPerConn concurrent calls (gRPC's MaxConcurrentStreams); a
//     connection must finish its HTTP/2 handshake within 10 s, may ping at
//     most every 10 s (keepalive enforcement: more is answered with a GOAWAY),
//     and is closed after 15 minutes without a call.
//   - Rate: each client (IPv4 address, or IPv6 /64) may start Config.ClientRate calls a
//     second, with bursts of twice that; past it a call is refused with
//     RESOURCE_EXHAUSTED / RATE_LIMITED and a RetryInfo saying when to retry.
//   - WatchFindings: at most Config.MaxWatchStreams streams in all and
//     Config.MaxWatchStreamsPerClient per client (RESOURCE_EXHAUSTED /
//     TOO_MANY_STREAMS, with a RetryInfo). All streams share one reader of the
//     findings (feed below), so a watcher costs a channel send per finding, not
//     a read of every new entry; a watcher that falls watchBuffer findings
//     behind is cut off (RESOURCE_EXHAUSTED / TOO_SLOW) rather than hold the
//     node's memory.
//   - Work per call: list calls examine at most maxScan index entries
//     (server.go), pages end before maxPageBytes, whole-serial calls run
//     heavyCalls at a time (audit_service.go), and errors quote at most 64
//     bytes of the input.

// Reasons of admission control.
const (
	// ReasonTooManyConnections: the node holds its limit of connections.
	ReasonTooManyConnections = "TOO_MANY_CONNECTIONS"
	ReasonRateLimited        = "RATE_LIMITED"
	ReasonTooManyStreams     = "TOO_MANY_STREAMS"
	ReasonTooSlow            = "TOO_SLOW"
)

// DefaultClientRate is the calls a second one client may start.
const DefaultClientRate = 20_000

// maxStreamsPerConn bounds the concurrent calls of one connection.
const maxStreamsPerConn = 256

// watchBuffer is how many findings a watcher may fall behind.
const watchBuffer = 1024

// exhausted is RESOURCE_EXHAUSTED with an ErrorInfo and a RetryInfo.
func exhausted(reason, msg string, retry time.Duration) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
		st = d
	}
	return st.Err()
}

// clientOf names the client of a call: its IPv4 address, or the /64 of its
// IPv6 address (one host holds a whole /64, and must not get a limit per
// address of it).
func clientOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return host
}

// limiter is a token bucket per client.
type limiter struct {
	rate    float64 // calls a second; 0 for no limit
	burst   float64
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxClients bounds the clients the limiter tracks one by one.
const maxClients = 100_000

func newLimiter(rate int) *limiter {
	return &limiter{rate: float64(rate), burst: 2 * float64(rate), buckets: make(map[string]*bucket)}
}

// allow takes a token for client, or says how long until one is there.
func (l *limiter) allow(client string, now time.Time) (bool, time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[client]
	if b == nil {
		if len(l.buckets) >= maxClients { // forget idle clients rather than grow without bound
			for k, v := range l.buckets {
				if now.Sub(v.last) > time.Minute {
					delete(l.buckets, k)
				}
			}
		}
		if len(l.buckets) >= maxClients {
			client = "(more clients than the node tracks)" // they share one bucket
		}
		if b = l.buckets[client]; b == nil {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[client] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// admit refuses a call past its client's rate. The cluster's own nodes
// (forwarding their clients' writes) are not limited.
func (n *Node) admit(ctx context.Context) error {
	client := clientOf(ctx)
	if n.isMemberHost(client) {
		return nil
	}
	ok, wait := n.rate.allow(client, time.Now())
	if ok {
		return nil
	}
	n.rateEvents.warn(n.log, "refused calls past a client's rate (--client-rate)", "client", client, "rate", n.cfg.ClientRate)
	return exhausted(ReasonRateLimited, fmt.Sprintf("client %s calls more than %d times a second, this node's limit for one client (gpuledgerd --client-rate); retry in %v",
		client, n.cfg.ClientRate, wait.Round(time.Millisecond)), max(wait, 10*time.Millisecond))
}

// feed reads the findings of newly applied entries, and the time-based ones
// as they fall due, once for all WatchFindings streams.
type feed struct {
	n         *Node
	mu        sync.Mutex
	subs      map[*watcher]struct{}
	perClient map[string]int
	start     chan struct{} // closed when the reader has started
	once      sync.Once
}

// watcher is one WatchFindings stream.
type watcher struct {
	client string
	ch     chan *pb.Finding
	slow   chan struct{} // closed when the watcher fell watchBuffer behind
	cut    sync.Once
}

func newFeed(n *Node) *feed {
	return &feed{n: n, subs: make(map[*watcher]struct{}), perClient: make(map[string]int), start: make(chan struct{})}
}

// subscribe adds a watcher for client, within the caps.
func (f *feed) subscribe(client string) (*watcher, error) {
	cfg := f.n.cfg
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case cfg.MaxWatchStreams > 0 && len(f.subs) >= cfg.MaxWatchStreams:
		return nil, exhausted(ReasonTooManyStreams, fmt.Sprintf("node %s serves %d WatchFindings streams, its limit; retry later or watch through another node", cfg.Name, cfg.MaxWatchStreams), 5*time.Second)
	case cfg.MaxWatchStreamsPerClient > 0 && f.perClient[client] >= cfg.MaxWatchStreamsPerClient:
		return nil, exhausted(ReasonTooManyStreams, fmt.Sprintf("client %s has %d WatchFindings streams open, the limit for one client; close one (one stream can watch every kind)", client, cfg.MaxWatchStreamsPerClient), 5*time.Second)
	}
	w := &watcher{client: client, ch: make(chan *pb.Finding, watchBuffer), slow: make(chan struct{})}
	f.subs[w] = struct{}{}
	f.perClient[client]++
	f.once.Do(func() {
		f.n.stopped.Add(1)
		go f.run()
	})
	return w, nil
}

func (f *feed) unsubscribe(w *watcher) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, w)
	if f.perClient[w.client]--; f.perClient[w.client] <= 0 {
		delete(f.perClient, w.client)
	}
}

// publish hands a finding to every watcher; one whose buffer is full is cut.
func (f *feed) publish(x *pb.Finding) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.subs {
		select {
		case w.ch <- x:
		default:
			w.cut.Do(func() { close(w.slow) })
		}
	}
}

// run reads findings for the watchers until the node stops.
func (f *feed) run() {
	n := f.n
	defer n.stopped.Done()
	l := n.ledger
	next := l.Size()
	mark := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	ctx := context.Background()
	for {
		wake := n.waitApplied()
		if size := l.Size(); next < size {
			err := l.Entries(ctx, next, size, func(e *pb.Entry) error {
				next = e.GetIndex() + 1
				fs, err := l.EntryFindings(ctx, e)
				for _, x := range fs {
					f.publish(x)
				}
				return err
			})
			if err != nil {
				n.log.Error("findings feed: reading new entries", "err", err)
			}
			continue
		}
		select {
		case <-wake:
		case now := <-tick.C:
			due, err := l.DueBetween(ctx, mark, now)
			if err != nil {
				n.log.Error("findings feed: reading due findings", "err", err)
				continue
			}
			mark = now
			for _, x := range due {
				f.publish(x)
			}
		case <-n.stop:
			return
		}
	}
}

// isMemberHost reports whether host is the host of a raft member's address
// (the set is read from the raft configuration at most every 5 s).
func (n *Node) isMemberHost(host string) bool {
	r := n.raftp.Load()
	if r == nil {
		return false
	}
	n.memberHosts.mu.Lock()
	defer n.memberHosts.mu.Unlock()
	if time.Since(n.memberHosts.read) > 5*time.Second {
		n.memberHosts.read = time.Now()
		n.memberHosts.hosts = map[string]bool{}
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if h, _, err := net.SplitHostPort(string(s.Address)); err == nil {
					n.memberHosts.hosts[h] = true
				}
			}
		}
	}
	return n.memberHosts.hosts[host] && len(n.memberHosts.hosts) > 1
}

// memberHosts caches the hosts of the raft members.
type memberHosts struct {
	mu    sync.Mutex
	read  time.Time
	hosts map[string]bool
}

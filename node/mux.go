package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/net/http2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// A node serves gRPC and raft on one address. A raft connection opens with
// the byte raftMagic, which no gRPC (HTTP/2) or TLS connection begins with;
// every other connection is handed to gRPC with its first byte put back.
// One address per node keeps configuration simple (the raft configuration's
// server addresses are the nodes' gRPC addresses, so a follower forwards
// writes to the address raft names as leader) and needs one firewall rule.
const raftMagic byte = 0xfe

// tlsHandshake is the first byte of a TLS connection (a handshake record).
const tlsHandshake byte = 0x16

// sniffTimeout bounds how long an accepted connection may take to send its
// first byte and, for raft, to complete its handshake (raftconn.go).
const sniffTimeout = 10 * time.Second

// mux splits one listener into a gRPC listener and a raft stream layer.
//
// It bounds the connections clients hold: at most limit connections are
// open that are not raft's (being sniffed, or served by gRPC). One past the
// limit is sniffed briefly all the same (at most overLimitSniffs at a time),
// so that a peer's raft connection still gets in while clients hold every
// slot; any other is told why in an HTTP/2 GOAWAY and closed. An Accept
// error other than the listener's closing (EMFILE, ENFILE, ENOBUFS) is
// logged with its cause and retried after a pause, as net/http does.
type mux struct {
	l       net.Listener
	grpc    *chanListener
	raft    *chanListener
	closeMu sync.Once
	// auth secures raft connections (raftconn.go); nil admits none.
	auth atomic.Pointer[raftAuth]
	log  *slog.Logger

	limit   int64        // most client connections; 0 for no limit
	clients atomic.Int64 // client connections open now
	over    atomic.Int64 // connections past the limit being sniffed
	refused atomic.Int64 // connections refused for the limit, ever
	events  logEvery

	refusals *chanListener // over-limit gRPC connections, for refusal
	refusal  *grpc.Server

	// plain, when the node serves TLS only, takes plaintext gRPC
	// connections to plainSrv, which tells them to use TLS.
	plain    *chanListener
	plainSrv *grpc.Server

	handshakes atomic.Int64 // raft handshakes under way
	raftEvents logEvery
}

// overLimitSniffs bounds the connections past the limit that are sniffed
// (for raft peers) or answered by the refusal server, and overLimitSniff how
// long each may take to send its first byte.
// maxRaftHandshakes bounds the raft handshakes under way.
const (
	overLimitSniffs   = 64
	overLimitSniff    = time.Second
	maxRaftHandshakes = 64
)

// newMux splits l. With creds (the node serves TLS only), plaintext gRPC
// connections are told to use TLS, and connections past the limit are
// refused over TLS.
func newMux(l net.Listener, limit int, log *slog.Logger, creds credentials.TransportCredentials, name string) *mux {
	m := &mux{l: l, grpc: newChanListener(l.Addr()), raft: newChanListener(l.Addr()), log: log, limit: int64(limit)}
	var opts []grpc.ServerOption
	if creds != nil {
		m.plain = newChanListener(l.Addr())
		m.plainSrv = plaintextRefusal(name)
		go m.plainSrv.Serve(m.plain)
		opts = append(opts, grpc.Creds(creds))
	}
	if limit > 0 {
		m.refusals = newChanListener(l.Addr())
		m.refusal = refusalServer(m.limit, opts...)
		go m.refusal.Serve(m.refusals)
	}
	go m.serve()
	return m
}

func (m *mux) serve() {
	var pause time.Duration
	for {
		c, err := m.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				m.close()
				return
			}
			// Out of file descriptors, or another passing failure: the
			// node goes on. Wait, doubling from 5 ms to 1 s, and retry.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			m.events.warn(m.log, "accept failed; retrying (raise the open-file limit, ulimit -n, or lower --max-connections)",
				"err", err, "retry_in", pause, "client_connections", m.clients.Load())
			time.Sleep(pause)
			continue
		}
		pause = 0
		go m.route(c)
	}
}

// Connections reports the client connections open now and how many were
// refused for the limit since the node started.
func (m *mux) Connections() (open, refused int64) { return m.clients.Load(), m.refused.Load() }

func (m *mux) route(c net.Conn) {
	n := m.clients.Add(1)
	counted := &countedConn{Conn: c, n: &m.clients}
	if m.limit > 0 && n > m.limit {
		counted.release()
		m.overLimit(c)
		return
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		counted.Close()
		return
	}
	if b[0] == raftMagic {
		counted.release() // raft's connections are bounded by raft's pool, not the limit
		m.routeRaft(c)
		return
	}
	c.SetReadDeadline(time.Time{})
	if m.plain != nil && b[0] != tlsHandshake {
		m.plain.push(&prefixConn{Conn: counted, first: b[0], has: true})
		return
	}
	m.grpc.push(&prefixConn{Conn: counted, first: b[0], has: true})
}

// overLimit handles a connection past the limit: a raft peer's is served;
// a gRPC client's gets RESOURCE_EXHAUSTED, with the reason and a RetryInfo,
// for every call it makes before the refusal server closes it (about two
// seconds); past overLimitSniffs such connections, one is sent a GOAWAY.
func (m *mux) overLimit(c net.Conn) {
	if m.over.Add(1) > overLimitSniffs {
		m.over.Add(-1)
		m.refuse(c)
		return
	}
	counted := &countedConn{Conn: c, n: &m.over}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(overLimitSniff))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		counted.Close()
		return
	}
	if b[0] == raftMagic {
		counted.release()
		m.routeRaft(c)
		return
	}
	c.SetReadDeadline(time.Time{})
	total := m.refused.Add(1)
	m.events.warn(m.log, "refused a connection: the node holds its limit of client connections (--max-connections)",
		"from", c.RemoteAddr().String(), "limit", m.limit, "refused_since_start", total)
	m.refusals.push(&prefixConn{Conn: counted, first: b[0], has: true})
}

// refusalServer answers every call with RESOURCE_EXHAUSTED saying that the
// node holds its limit of connections, and closes each connection soon.
func refusalServer(limit int64, opts ...grpc.ServerOption) *grpc.Server {
	msg := fmt.Sprintf("the node holds %d client connections, its limit (gpuledgerd --max-connections); retry later or ask another node", limit)
	refuse := func(any, grpc.ServerStream) error {
		st := status.New(codes.ResourceExhausted, msg)
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonTooManyConnections, Domain: ErrorDomain},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}); err == nil {
			st = d
		}
		return st.Err()
	}
	return grpc.NewServer(append([]grpc.ServerOption{grpc.UnknownServiceHandler(refuse), grpc.MaxConcurrentStreams(4), grpc.MaxRecvMsgSize(1 << 16), grpc.ConnectionTimeout(time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: time.Second, MaxConnectionAgeGrace: time.Second})}, opts...)...)
}

// refuse tells an HTTP/2 (gRPC) client why it is turned away, in a GOAWAY
// with ENHANCE_YOUR_CALM, and closes the connection. It first reads what the
// client sent (100 ms at most), so that closing does not reset the
// connection and lose the GOAWAY.
func (m *mux) refuse(c net.Conn) {
	total := m.refused.Add(1)
	m.events.warn(m.log, "refused a connection: the node holds its limit of client connections (--max-connections)",
		"from", c.RemoteAddr().String(), "limit", m.limit, "refused_since_start", total)
	c.SetDeadline(time.Now().Add(100 * time.Millisecond))
	fr := http2.NewFramer(c, nil)
	if fr.WriteSettings() == nil {
		fr.WriteGoAway(0, http2.ErrCodeEnhanceYourCalm,
			[]byte(fmt.Sprintf("gpuledger node: %d client connections open, its limit; retry later or ask another node", m.limit)))
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
		io.Copy(io.Discard, io.LimitReader(c, 1<<16))
	}
	c.Close()
}

// routeRaft secures a raft connection and hands it to raft. At most
// maxRaftHandshakes run at once: a connection that sends raft's first byte
// is not counted against the limit, so a stranger must not hold many.
func (m *mux) routeRaft(c net.Conn) {
	a := m.auth.Load()
	if a == nil {
		c.Close() // this node takes no part in raft
		return
	}
	if m.handshakes.Add(1) > maxRaftHandshakes {
		m.handshakes.Add(-1)
		m.raftEvents.warn(m.log, "refused a raft connection: too many raft handshakes at once", "from", c.RemoteAddr().String())
		c.Close()
		return
	}
	tc, err := a.accept(c)
	m.handshakes.Add(-1)
	if err != nil {
		m.raftEvents.warn(m.log, "refused a raft connection", "from", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	m.raft.push(tc)
}

// countedConn gives back its slot of the connection count once, on Close.
type countedConn struct {
	net.Conn
	n    *atomic.Int64
	once sync.Once
}

func (c *countedConn) release() { c.once.Do(func() { c.n.Add(-1) }) }

func (c *countedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// logEvery logs a recurring event at most once per quietPeriod, with how
// many times it happened since it was last logged.
type logEvery struct {
	mu    sync.Mutex
	last  time.Time
	count int
}

func (e *logEvery) warn(log *slog.Logger, msg string, args ...any) {
	e.log(log, slog.LevelWarn, msg, args...)
}

func (e *logEvery) log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	e.mu.Lock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < quietPeriod {
		e.count++
		e.mu.Unlock()
		return
	}
	again := e.count
	e.last, e.count = now, 0
	e.mu.Unlock()
	if again > 0 {
		args = append(args, "repeated", again)
	}
	log.Log(context.Background(), level, msg, args...)
}

func (m *mux) close() {
	m.closeMu.Do(func() {
		m.l.Close()
		m.grpc.Close()
		m.raft.Close()
		if m.refusal != nil {
			m.refusal.Stop()
		}
		if m.plainSrv != nil {
			m.plainSrv.Stop()
		}
	})
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(a net.Addr) *chanListener {
	return &chanListener{addr: a, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// prefixConn gives back the byte the mux read.
type prefixConn struct {
	net.Conn
	mu    sync.Mutex
	first byte
	has   bool
}

func (c *prefixConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.has && len(p) > 0 {
		p[0] = c.first
		c.has = false
		c.mu.Unlock()
		return 1, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// raftLayer is raft's StreamLayer over the mux: it dials peers' node
// addresses, opens each connection with raftMagic and secures it
// (raftconn.go).
type raftLayer struct {
	*chanListener
	advertise net.Addr
	auth      *raftAuth
}

func (r *raftLayer) Addr() net.Addr { return r.advertise }

func (r *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{raftMagic}); err != nil {
		c.Close()
		return nil, err
	}
	tc, err := r.auth.dial(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raft connection to %s: %w", addr, err)
	}
	return tc, nil
}

// advertiseAddr is a net.Addr for a configured host:port.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A node serves gRPC and raft on one address. A raft connection opens with
// the byte raftMagic, which no gRPC (HTTP/2) or TLS connection begins with;
// every other connection is handed to gRPC with its first byte put back.
// One address per node keeps configuration simple (the raft configuration's
// server addresses are the nodes' gRPC addresses, so a follower forwards
// writes to the address raft names as leader) and needs one firewall rule.
const raftMagic byte = 0xfe

// sniffTimeout bounds how long an accepted connection may take to send its
// first byte and, for raft, to complete its handshake (raftconn.go).
const sniffTimeout = 10 * time.Second

// mux splits one listener into a gRPC listener and a raft stream layer.
type mux struct {
	l       net.Listener
	grpc    *chanListener
	raft    *chanListener
	closeMu sync.Once
	// auth secures raft connections (raftconn.go); nil admits none.
	auth atomic.Pointer[raftAuth]
	log  *slog.Logger
}

func newMux(l net.Listener, log *slog.Logger) *mux {
	m := &mux{l: l, grpc: newChanListener(l.Addr()), raft: newChanListener(l.Addr()), log: log}
	go m.serve()
	return m
}

func (m *mux) serve() {
	for {
		c, err := m.l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.close()
			return
		}
		go m.route(c)
	}
}

func (m *mux) route(c net.Conn) {
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return
	}
	if b[0] == raftMagic {
		a := m.auth.Load()
		if a == nil {
			c.Close() // this node takes no part in raft
			return
		}
		tc, err := a.accept(c)
		if err != nil {
			m.log.Warn("refused a raft connection", "from", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		m.raft.push(tc)
		return
	}
	c.SetReadDeadline(time.Time{})
	m.grpc.push(&prefixConn{Conn: c, first: b[0], has: true})
}

func (m *mux) close() {
	m.closeMu.Do(func() {
		m.l.Close()
		m.grpc.Close()
		m.raft.Close()
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

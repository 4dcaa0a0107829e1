// Package node serves a gpuledger ledger over gRPC and replicates it with
// raft (hashicorp/raft). Each organisation's node is a voter; a node alone is
// a one-voter cluster. Every write goes through the raft log, and every node's
// FSM applies committed batches with ledger.Apply, verifying every signature
// itself. Followers forward writes to the leader over gRPC. Raft and gRPC
// share the node's one address (see mux.go).
//
// Writes are group-committed: concurrent Append and AppendBatch calls are
// gathered for up to Config.BatchWindow into one raft command, whose
// envelopes are verified (ledger.Preverify) before it is proposed, so that
// verification of the next batch overlaps the commit of the previous one.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Config configures a Node.
type Config struct {
	// Name is the node's name: its raft server id and its note key's name.
	Name string
	// Dir holds the ledger (Dir/ledger) and the raft log (Dir/raft).
	Dir string
	// Genesis is the genesis file's bytes; required on first start.
	Genesis []byte
	// NodeSigner signs checkpoints.
	NodeSigner note.Signer
	// Logger receives the node's logs; slog.Default() when nil.
	Logger *slog.Logger
	// BatchWindow is how long the first write of a group waits for others
	// before the group is proposed.
	BatchWindow time.Duration
	// MaxBatchEnvelopes caps one raft command (and AppendBatch).
	MaxBatchEnvelopes int
	// ApplyTimeout bounds how long a write waits to be committed.
	ApplyTimeout time.Duration
	// ReadWait bounds how long a read with min_index waits for the node to
	// catch up.
	ReadWait time.Duration
	// MaxConnections bounds the client (non-raft) connections the node's
	// Listener holds open; past it a client is refused with an HTTP/2
	// GOAWAY that says why. 0 means no limit. DefaultMaxConnections sets it
	// from the open-file limit.
	MaxConnections int
	// ClientRate is how many calls a second one client (an IP address) may
	// start, with bursts of twice that; 0 for no limit (admission.go).
	ClientRate int
	// MaxWatchStreams and MaxWatchStreamsPerClient bound the open
	// WatchFindings streams, in all and per client; 0 for no limit.
	MaxWatchStreams, MaxWatchStreamsPerClient int
	// MinFreeSpace is the free space in Dir below which the node accepts no
	// writes (see space.go); 0 turns the guard off. At least the stores'
	// sparse reservation (800 MiB) when set.
	MinFreeSpace uint64

	// Listener is the node's address. With it the node serves raft on it
	// beside gRPC (serve gRPC on GRPCListener) and reaches its peers over
	// TCP. Without it the node is a one-voter cluster on an in-memory
	// transport (tests and benchmarks).
	Listener net.Listener
	// Advertise is the address peers and clients reach this node at
	// (host:port); Listener's address when empty.
	Advertise string
	// Peers founds a new cluster: every founding node's name and address,
	// this node's among them. Every founder must be given the same list. Used
	// only when the node has no raft state yet.
	Peers []Peer
	// Join is the address of a running member: a new node asks it to add this
	// node as a voter. Used only when the node has no raft state yet.
	Join string
	// SnapshotInterval, SnapshotThreshold and TrailingLogs set when raft
	// snapshots the ledger and compacts its log: every SnapshotInterval, if
	// SnapshotThreshold commands were applied since the last snapshot, keeping
	// the newest TrailingLogs commands for followers that are a little behind.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// TLS, when set, serves gRPC over TLS 1.3 only (a plaintext client is
	// told so: FAILED_PRECONDITION TLS_REQUIRED), and the node dials its
	// peers over TLS with a certificate over its node key, checked against
	// the registry both ways. NodeSigner must then be an *auth.NodeKey.
	TLS *TLSFiles
	// ReadScope is who may read what (auth.go); anything but ScopeOpen
	// needs TLS.
	ReadScope Scope

	// ApplyDelay makes a follower wait this long before it applies each
	// batch: a follower behind the leader, for tests of reads across nodes.
	ApplyDelay time.Duration
	// WithholdLast makes the node serve every serial's history without its
	// last WithholdLast entries: a withholding node, for tests of clients
	// that must catch it (the serial map commits to each serial's head).
	WithholdLast int
	// StaleMap makes the node sign checkpoints with the serial map root of
	// log size StaleMapSize (ledger.Config.StaleMap): for tests only.
	StaleMap     bool
	StaleMapSize uint64
	// Clock, if set, dates the batches the node proposes when it leads, as
	// they are (not clamped to the last batch's date as time.Now is). Tests
	// set it to play a leader whose clock is wrong, or that lies.
	Clock func() time.Time
}

// Peer is a member of the raft configuration.
type Peer struct {
	Name, Addr string
}

// DefaultConfig returns the defaults for a node named name storing in dir.
func DefaultConfig(name, dir string) Config {
	return Config{
		Name:                     name,
		Dir:                      dir,
		BatchWindow:              2 * time.Millisecond,
		MaxBatchEnvelopes:        ledger.DefaultMaxBatchEnvelopes,
		ApplyTimeout:             10 * time.Second,
		ReadWait:                 2 * time.Second,
		MaxConnections:           DefaultMaxConnections(),
		MinFreeSpace:             DefaultMinFreeSpace,
		ClientRate:               DefaultClientRate,
		MaxWatchStreams:          1024,
		MaxWatchStreamsPerClient: 32,
		SnapshotInterval:         2 * time.Minute,
		SnapshotThreshold:        8192,
		TrailingLogs:             10240,
	}
}

// DefaultMaxConnections is half the process's open-file limit, from 16 to
// 4096: the other half is left for the stores' files, raft's connections and
// the node's own dials. Without a known limit it is 4096.
func DefaultMaxConnections() int {
	n := openFileLimit()
	if n == 0 {
		return 4096
	}
	return int(min(max(n/2, 16), 4096))
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("node config: Name is required")
	case c.Dir == "":
		return errors.New("node config: Dir is required")
	case c.NodeSigner == nil:
		return errors.New("node config: NodeSigner (the node key) is required")
	case c.NodeSigner.Name() != c.Name:
		return fmt.Errorf("node config: node key is named %q, the node %q", c.NodeSigner.Name(), c.Name)
	case c.MaxBatchEnvelopes <= 0 || c.MaxBatchEnvelopes > ledger.DefaultMaxBatchEnvelopes:
		return fmt.Errorf("node config: MaxBatchEnvelopes must be 1 to %d", ledger.DefaultMaxBatchEnvelopes)
	case c.MinFreeSpace != 0 && c.MinFreeSpace < minFreeFloor:
		return fmt.Errorf("node config: MinFreeSpace %d is less than the %d bytes the stores hold reserved on disk; give at least that, or 0 to turn the guard off", c.MinFreeSpace, uint64(minFreeFloor))
	case c.ClientRate < 0 || c.MaxWatchStreams < 0 || c.MaxWatchStreamsPerClient < 0:
		return errors.New("node config: ClientRate, MaxWatchStreams and MaxWatchStreamsPerClient must not be negative (0 for no limit)")
	case c.ReadScope < ScopeOpen || c.ReadScope > ScopeScoped:
		return fmt.Errorf("node config: ReadScope %d is not a scope", int(c.ReadScope))
	case c.ReadScope != ScopeOpen && c.TLS == nil:
		return fmt.Errorf("node config: read scope %s needs TLS (--tls-cert, --tls-key): a client's identity and what it reads must not cross the network in plaintext", c.ReadScope)
	case c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == ""):
		return errors.New("node config: TLS needs a certificate file and a key file (--tls-cert, --tls-key)")
	case c.MaxConnections < 0:
		return errors.New("node config: MaxConnections must not be negative (0 for no limit)")
	case c.BatchWindow < 0 || c.ApplyTimeout <= 0 || c.ReadWait < 0:
		return errors.New("node config: BatchWindow, ApplyTimeout and ReadWait must not be negative")
	case (len(c.Peers) > 0 || c.Join != "") && c.Listener == nil:
		return errors.New("node config: Peers and Join need a Listener (the node's address)")
	case len(c.Peers) > 0 && c.Join != "":
		return errors.New("node config: give Peers (found a cluster) or Join (join one), not both")
	case c.SnapshotInterval <= 0 || c.SnapshotThreshold == 0:
		return errors.New("node config: SnapshotInterval and SnapshotThreshold must be positive")
	}
	if _, ok := c.NodeSigner.(tlsSigner); c.TLS != nil && !ok {
		return errors.New("node config: with TLS the node key must be able to sign for TLS (parse it with auth.ParseNodeKey)")
	}
	if len(c.Peers) > 0 {
		seen := make(map[string]bool)
		self := false
		for _, p := range c.Peers {
			if p.Name == "" || p.Addr == "" {
				return fmt.Errorf("node config: peer %q at %q: name and address are required", p.Name, p.Addr)
			}
			if seen[p.Name] {
				return fmt.Errorf("node config: peer %s is listed twice", p.Name)
			}
			seen[p.Name] = true
			self = self || p.Name == c.Name
		}
		if !self {
			return fmt.Errorf("node config: the peers do not include this node (%s); list every founding node, this one too", c.Name)
		}
	}
	return nil
}

// Node is a running ledger node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	ledger *ledger.Ledger
	raft   *raft.Raft
	store  *raftStore
	health *health.Server
	mux    *mux
	addr   string // the address peers reach this node at
	peers  *peerConns

	// restoring is set while a snapshot replaces the store; reads wait out.
	restoring atomic.Bool
	// lastBatch is the raft index, size and root after the last applied
	// batch; the leader sends it with its next command so followers can
	// compare (see fsm.Apply).
	lastBatch atomic.Pointer[batchState]
	// recent keeps this node's batchState for recent raft indexes.
	recentMu sync.Mutex
	recent   map[uint64]batchState

	in      chan *request
	stop    chan struct{}
	stopped sync.WaitGroup

	// changesInFlight counts proposed commands with a registry change not
	// yet applied; refusedEarly counts envelopes refused before raft.
	changesInFlight atomic.Int64
	refusedEarly    atomic.Uint64
	// clock is what the node knows of the raft log's dates (clock.go).
	clock clockState
	raftp atomic.Pointer[raft.Raft] // n.raft, for raft's own goroutines
	// space is the last reading of the free disk space (space.go);
	// readOnly is set when the node opened its store read-only for lack of
	// it, and spaceBack is closed when space returns.
	heavy       chan struct{} // heavyCall's slots
	rate        *limiter      // calls per client (admission.go)
	rateEvents  logEvery
	watch       *feed // the findings WatchFindings streams share
	memberHosts memberHosts
	space       atomic.Pointer[spaceState]
	readOnly    bool
	spaceBack   chan struct{}
	spaceOnce   sync.Once

	// tls is the server's TLS configuration (nil: plaintext); verifiers
	// and nonces check per-call tokens (auth.go).
	tls       *tls.Config
	verifiers keys.Cache
	nonces    nonces
	nodeKeys  atomic.Pointer[nodeKeys]

	applied atomic.Pointer[chan struct{}] // closed and replaced after each applied batch
	alarm   atomic.Pointer[string]
}

// Open opens the ledger and raft state in cfg.Dir and starts the node.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "raft"), 0o700); err != nil {
		return nil, fmt.Errorf("open node: %w", err)
	}
	lcfg := ledger.DefaultConfig(filepath.Join(cfg.Dir, "ledger"))
	lcfg.Genesis, lcfg.NodeSigner, lcfg.Logger = cfg.Genesis, cfg.NodeSigner, cfg.Logger
	lcfg.StaleMap, lcfg.StaleMapSize = cfg.StaleMap, cfg.StaleMapSize
	// The raft log is fsynced before a command commits, and the ledger
	// records the raft index of each batch in the same transaction, so after
	// a crash raft replays exactly what the ledger lost. The ledger need not
	// fsync each batch; Snapshot syncs it before raft may compact the log.
	lcfg.SyncWrites = false
	n := &Node{cfg: cfg, log: cfg.Logger, health: health.NewServer(),
		in: make(chan *request, 4096), stop: make(chan struct{}), recent: make(map[uint64]batchState), spaceBack: make(chan struct{}), heavy: make(chan struct{}, heavyCalls)}
	n.space.Store(&spaceState{})
	n.rate, n.watch = newLimiter(cfg.ClientRate), newFeed(n)
	if n.checkSpace() {
		// Too little room to write: open the store read-only, serve reads,
		// take no part in raft (space.go).
		n.readOnly, lcfg.ReadOnly = true, true
		n.log.Error("starting read-only: too little free disk space to write; the node serves reads and takes no part in the cluster until space is freed",
			"free", n.space.Load().free, "min_free_space", cfg.MinFreeSpace)
	}
	ch := make(chan struct{})
	n.applied.Store(&ch)
	n.addr = cfg.Advertise
	n.peers = newPeerConns(nil)
	if cfg.TLS != nil {
		r, err := newReloader(*cfg.TLS, func(msg string, args ...any) { n.log.Warn(msg, args...) })
		if err != nil {
			return nil, err
		}
		nodeCert, err := auth.SelfSigned(cfg.NodeSigner.(tlsSigner).TLSSigner(), cfg.Name)
		if err != nil {
			return nil, err
		}
		n.tls = n.serverTLS(r, nodeCert)
		n.peers = newPeerConns(n.peerCredentials(nodeCert))
	}
	if cfg.Listener != nil {
		var creds credentials.TransportCredentials
		if n.tls != nil {
			creds = credentials.NewTLS(n.tls)
		}
		n.mux = newMux(cfg.Listener, cfg.MaxConnections, cfg.Logger, creds, cfg.Name)
		if n.addr == "" {
			n.addr = cfg.Listener.Addr().String()
		}
	}
	l, err := ledger.Open(ctx, lcfg)
	if err != nil && n.readOnly {
		n.close()
		return nil, fmt.Errorf("%s has %d bytes free, less than --min-free-space (%d), so the store was opened read-only, and: %w",
			cfg.Dir, n.space.Load().free, cfg.MinFreeSpace, err)
	}
	if errors.Is(err, ledger.ErrCorrupt) {
		// Serve the reason, not the store: health NOT_SERVING, the alarm in
		// GetClusterStatus, every ledger RPC refused with it. The node takes
		// no part in raft until an operator repairs or replaces the store.
		n.raiseAlarm(fmt.Sprintf("the store failed its start-up check and is not served: %v", err))
		return n, nil
	}
	if err != nil {
		n.close()
		return nil, err
	}
	n.ledger = l
	if n.readOnly {
		n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		n.health.SetServingStatus(WritesService, healthpb.HealthCheckResponse_NOT_SERVING)
		n.stopped.Add(1)
		go n.watchSpace()
		return n, nil
	}
	if cfg.Join == "" {
		if err := knownNodeKey(cfg.NodeSigner, l.Registry().Nodes()); err != nil {
			l.Close()
			n.close()
			return nil, err
		}
	}
	n.lastBatch.Store(stateOf(l, l.AppliedIndex()))
	n.clock.lastAt = l.LastAcceptedAt()
	if err := n.startRaft(ctx); err != nil {
		l.Close()
		n.close()
		return nil, err
	}
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	n.health.SetServingStatus(WritesService, healthpb.HealthCheckResponse_SERVING)
	n.stopped.Add(2)
	go n.batcher()
	go n.watchSpace()
	return n, nil
}

// knownNodeKey returns nil when the signer is one of the registry's nodes,
// else an error naming the key and the nodes the registry has: a node
// signing with any other key would serve checkpoints no verifier accepts.
func knownNodeKey(s note.Signer, nodes []*pb.Node) error {
	var names []string
	for _, nd := range nodes {
		v, err := note.NewVerifier(nd.GetVerifierKey())
		if err == nil && v.Name() == s.Name() && v.KeyHash() == s.KeyHash() {
			return nil
		}
		names = append(names, fmt.Sprintf("%s (%s)", nd.GetName(), nd.GetParticipantId()))
	}
	return fmt.Errorf("the node key %s+%08x is not a node of this ledger's registry, whose nodes are %s: "+
		"give --node-key the key of one of them, or have a regulator register this one (gpuledger registry add-node) and start it with --join",
		s.Name(), s.KeyHash(), strings.Join(names, ", "))
}

// GRPCListener returns the listener the node's gRPC server must serve on
// when the node was given a Listener (raft shares it), or nil.
func (n *Node) GRPCListener() net.Listener {
	if n.mux == nil {
		return nil
	}
	return n.mux.grpc
}

// Addr returns the address peers reach this node at ("" on an in-memory
// transport).
func (n *Node) Addr() string { return n.addr }

func (n *Node) startRaft(ctx context.Context) error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: newSlogWriter(n.log), DisableTime: true})
	// The FSM is durable (the ledger records the last applied raft index in the
	// same transaction as each batch), so nothing is restored from a snapshot
	// at start: raft replays only what the ledger has not applied.
	rc.NoSnapshotRestoreOnStart = true
	// Nodes of one consortium talk over WANs but a lost leader stops every
	// write: elect within a second or two.
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.TrailingLogs = n.cfg.TrailingLogs
	store, err := openRaftStore(filepath.Join(n.cfg.Dir, "raft", "log"), n.log)
	if err != nil {
		return err
	}
	store.check = func(logs []*raft.Log) error {
		if r := n.raftp.Load(); n.space.Load().low && (r == nil || r.State() != raft.Leader) {
			return fmt.Errorf("this node is short of disk space and stores no more entries until space is freed: %s", statusMessage(n.noSpace()))
		}
		return n.checkLeaderTime(logs)
	}
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(n.cfg.Dir, "raft"), 2, newSlogWriter(n.log))
	if err != nil {
		store.Close()
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	var trans raft.Transport
	var addr raft.ServerAddress
	if n.mux != nil {
		auth, err := newRaftAuth(n.signHello, n.checkHello)
		if err != nil {
			store.Close()
			return err
		}
		n.mux.auth.Store(auth)
		addr = raft.ServerAddress(n.addr)
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  &raftLayer{chanListener: n.mux.raft, advertise: advertiseAddr(n.addr), auth: auth},
			MaxPool: 3, Timeout: 10 * time.Second, Logger: rc.Logger,
		})
	} else {
		addr, trans = raft.NewInmemTransport(raft.ServerAddress(n.cfg.Name))
	}
	existing, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		store.Close()
		return fmt.Errorf("raft state: %w", err)
	}
	if existing && (len(n.cfg.Peers) > 0 || n.cfg.Join != "") {
		n.log.Info("this node has raft state already: its members come from it, and the peers or join address given are not used")
	}
	if !existing && n.cfg.Join == "" {
		servers := []raft.Server{{ID: rc.LocalID, Address: addr, Suffrage: raft.Voter}}
		if len(n.cfg.Peers) > 0 {
			servers = servers[:0]
			reg := n.ledger.Registry()
			for _, p := range n.cfg.Peers {
				if !isNode(reg, p.Name) {
					store.Close()
					return fmt.Errorf("peer %s is not a node of this ledger's registry; the registry's nodes are %s", p.Name, nodeNames(reg))
				}
				servers = append(servers, raft.Server{ID: raft.ServerID(p.Name), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
			}
		}
		if err := raft.BootstrapCluster(rc, store, store, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			store.Close()
			return fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, &fsm{n: n}, store, store, snaps, trans)
	if err != nil {
		store.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft, n.store = r, store
	n.raftp.Store(r)
	if !existing && n.cfg.Join != "" {
		n.stopped.Add(1)
		go n.joinLoop()
	}
	return nil
}

// IsLeader reports whether this node leads the cluster now.
func (n *Node) IsLeader() bool { return n.raft != nil && n.raft.State() == raft.Leader }

// WaitLeader blocks until this node leads (a one-voter cluster elects itself
// within a second) or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	if n.raft == nil {
		return errors.New(n.alarmText())
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leadership: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Alarm says why the node stopped applying or serving, or "".
func (n *Node) Alarm() string { return n.alarmText() }

// Size returns the log size the node has applied (0 when it serves no store).
func (n *Node) Size() uint64 {
	if n.ledger == nil {
		return 0
	}
	return n.ledger.Size()
}

// RaftLastIndex returns the index of the last entry of this node's raft log
// (0 when the node takes no part in raft).
func (n *Node) RaftLastIndex() uint64 {
	if n.raft == nil {
		return 0
	}
	return n.raft.LastIndex()
}

// Cluster returns how many servers the raft configuration has (0 when the
// node takes no part in raft).
func (n *Node) Cluster() int {
	if n.raft == nil {
		return 0
	}
	return len(n.members())
}

// Ledger returns the node's ledger (for reads).
func (n *Node) Ledger() *ledger.Ledger { return n.ledger }

// Close stops the node: writes stop being accepted, raft shuts down, then
// the ledger closes. The gRPC server must have stopped first.
func (n *Node) Close(ctx context.Context) error {
	close(n.stop)
	n.stopped.Wait()
	n.health.Shutdown()
	var errs []error
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	if n.ledger != nil {
		if err := n.ledger.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	n.close()
	return errors.Join(errs...)
}

// close releases what Open set up before the ledger and raft.
func (n *Node) close() {
	n.peers.close()
	if n.mux != nil {
		n.mux.close()
	}
}

// notifyApplied wakes readers waiting for new entries.
func (n *Node) notifyApplied() {
	ch := make(chan struct{})
	old := n.applied.Swap(&ch)
	close(*old)
}

// waitApplied returns a channel closed at the next applied batch.
func (n *Node) waitApplied() <-chan struct{} { return *n.applied.Load() }

// raiseAlarm stops the node from applying and serving: it would diverge
// from the log. A leader hands leadership to another node.
func (n *Node) raiseAlarm(msg string) {
	if !n.alarm.CompareAndSwap(nil, &msg) {
		return // the first reason stands
	}
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	n.log.Error("node alarm: stopped applying and serving", "reason", msg)
	if n.raft != nil && n.raft.State() == raft.Leader {
		go n.raft.LeadershipTransfer()
	}
}

func (n *Node) alarmText() string {
	if p := n.alarm.Load(); p != nil {
		return *p
	}
	return ""
}

// fsm applies committed raft commands to the ledger.
type fsm struct{ n *Node }

// fsmResponse is what Apply returns to the proposer.
type fsmResponse struct {
	results []ledger.Result
	err     error
}

func (f *fsm) Apply(lg *raft.Log) any {
	n := f.n
	if lg.Type != raft.LogCommand {
		return nil
	}
	if lg.Index <= n.ledger.AppliedIndex() {
		return fsmResponse{err: fmt.Errorf("raft entry %d was applied before a restart or is in the snapshot", lg.Index)} // replay
	}
	if a := n.alarmText(); a != "" {
		return fsmResponse{err: errUnavailable{"node stopped applying: " + a}}
	}
	if r := n.raftp.Load(); n.cfg.ApplyDelay > 0 && r != nil && r.State() != raft.Leader {
		d := n.cfg.ApplyDelay
		time.Sleep(d)
	}
	at, check, envs, err := decodeBatch(lg.Data)
	if err != nil {
		n.raiseAlarm(fmt.Sprintf("raft entry %d: %v", lg.Index, err))
		return fsmResponse{err: err}
	}
	if err := n.compare(check); err != nil {
		n.raiseAlarm(fmt.Sprintf("raft entry %d: %v", lg.Index, err))
		return fsmResponse{err: errUnavailable{err.Error()}}
	}
	rs, err := n.ledger.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: envs, AppliedIndex: lg.Index})
	for err != nil && errors.Is(err, syscall.ENOSPC) {
		// The disk filled faster than the guard saw (space.go). A committed
		// entry cannot be skipped: stop applying until there is room, then
		// apply it again (a failed Apply changed nothing).
		n.log.Error("out of disk space applying a raft entry: waiting for space to apply it", "raft_index", lg.Index, "err", err)
		for n.checkSpace() || !n.haveRoom() {
			select {
			case <-n.stop:
				return fsmResponse{err: errUnavailable{"node is shutting down"}}
			case <-time.After(spaceCheckInterval):
			}
		}
		rs, err = n.ledger.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: envs, AppliedIndex: lg.Index})
	}
	if err != nil {
		if rej := (*custody.Error)(nil); errors.As(err, &rej) && rej.Code == custody.TooLarge {
			return fsmResponse{err: err} // over a limit: nothing applied on any node
		}
		if bt := (*ledger.BatchTimeError)(nil); errors.As(err, &bt) {
			return fsmResponse{err: errUnavailable{err.Error()}} // refused on every node alike
		}
		n.raiseAlarm(fmt.Sprintf("raft entry %d: %v", lg.Index, err))
		return fsmResponse{err: err}
	}
	n.recordBatch(*stateOf(n.ledger, lg.Index))
	n.notifyApplied()
	return fsmResponse{results: rs}
}

// stateOf is l's state after the batch at raft index index.
func stateOf(l *ledger.Ledger, index uint64) *batchState {
	b := &batchState{index: index, size: l.Size(), root: l.Root()}
	b.mapRoot, b.hasMap = l.CurrentMapRoot()
	return b
}

// recentBatches is how many batch states a node keeps for compare.
const recentBatches = 4096

func (n *Node) recordBatch(b batchState) {
	n.lastBatch.Store(&b)
	n.recentMu.Lock()
	defer n.recentMu.Unlock()
	n.recent[b.index] = b
	delete(n.recent, b.index-recentBatches)
}

// compare checks the proposer's state after a raft index against this
// node's. Every node applies the same commands to the same state with the
// same rules, verifying every signature itself, so the two agree unless one
// store was tampered with or one node judged an envelope otherwise (a
// follower rejecting what the leader accepted). Then this node stops applying
// rather than follow the proposer: the proposer's state is unknown to it
// (check.index not recent) or differs from its own.
func (n *Node) compare(check batchState) error {
	if check.index == 0 {
		return nil
	}
	n.recentMu.Lock()
	mine, ok := n.recent[check.index]
	n.recentMu.Unlock()
	if !ok || (mine.size == check.size && mine.root == check.root && (!check.hasMap || !mine.hasMap || mine.mapRoot == check.mapRoot)) {
		return nil
	}
	if mine.size == check.size && mine.root == check.root {
		return fmt.Errorf("after raft entry %d the leader's serial map has root %x, this node's %x (the same log of %d entries): "+
			"the two rebuilt a serial's state differently or one store was altered; this node stopped applying instead of diverging (run gpuledgerd check on its store)",
			check.index, check.mapRoot[:], mine.mapRoot[:], mine.size)
	}
	return fmt.Errorf("after raft entry %d the leader's log has %d entries with root %x, this node's %d entries with root %x: "+
		"the two judged a batch differently or one store was altered; this node stopped applying instead of diverging (run gpuledgerd check on its store)",
		check.index, check.size, check.root[:], mine.size, mine.root[:])
}

// Snapshot makes the ledger durable (raft may then compact its log up to
// the snapshot's index) and starts a backup: a consistent read of the store
// as it is now, at the snapshot's index (raft does not apply while Snapshot
// runs). Persist streams it in badger's backup format while Apply goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.n.ledger.Sync(); err != nil {
		return nil, err
	}
	return &backupSnapshot{b: f.n.ledger.BeginBackup()}, nil
}

// Restore replaces the store with a peer's snapshot: a node far behind (or
// new) catches up without replaying the compacted log. The snapshot must
// extend this node's log and pass the store check; otherwise the node raises
// its alarm. Reads wait until the restore ends.
func (f *fsm) Restore(rc io.ReadCloser) error {
	n := f.n
	defer rc.Close()
	if a := n.alarmText(); a != "" {
		// The store is not to be trusted to judge what extends it; an
		// operator repairs or replaces it.
		return fmt.Errorf("node stopped applying: %s", a)
	}
	n.restoring.Store(true)
	defer n.restoring.Store(false)
	start := time.Now()
	old, err := n.ledger.Restore(context.Background(), rc)
	if err != nil {
		n.raiseAlarm(fmt.Sprintf("installing a snapshot: %v", err))
		return err
	}
	n.recentMu.Lock()
	clear(n.recent)
	n.recentMu.Unlock()
	n.lastBatch.Store(stateOf(n.ledger, n.ledger.AppliedIndex()))
	n.log.Info("installed a snapshot", "entries_before", old, "entries", n.ledger.Size(), "raft_index", n.ledger.AppliedIndex(), "took", time.Since(start).Round(time.Millisecond))
	n.notifyApplied()
	return nil
}

type backupSnapshot struct{ b *ledger.Backup }

func (s *backupSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.b.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *backupSnapshot) Release() { s.b.Close() }

// slogWriter adapts raft's line logger to slog. A peer that is down makes
// raft log the same failure many times a second; each distinct message is
// logged at most once per quietPeriod, with how often it recurred (logEvery).
type slogWriter struct {
	l    *slog.Logger
	mu   *sync.Mutex
	seen map[string]*logEvery
}

const quietPeriod = 30 * time.Second

var noisy = regexp.MustCompile(` (backoff time|term)=\S+`)

func newSlogWriter(l *slog.Logger) slogWriter {
	return slogWriter{l: l, mu: new(sync.Mutex), seen: make(map[string]*logEvery)}
}

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	key := noisy.ReplaceAllString(msg, "")
	w.mu.Lock()
	e := w.seen[key]
	if e == nil {
		if len(w.seen) > 1000 {
			clear(w.seen)
		}
		e = new(logEvery)
		w.seen[key] = e
	}
	w.mu.Unlock()
	level, msg := hclogLevel(msg)
	e.log(w.l, level, msg, "component", "raft")
	return len(p), nil
}

var hclogPrefix = regexp.MustCompile(`^(?:\S+ )?\[(ERROR|WARN|INFO|DEBUG|TRACE)\] *`)

// hclogLevel reads the level hclog wrote into a line ("[WARN]  raft: ...",
// maybe after a timestamp) and returns it with the line less that prefix;
// a line without one is a warning.
func hclogLevel(line string) (slog.Level, string) {
	m := hclogPrefix.FindStringSubmatch(line)
	if m == nil {
		return slog.LevelWarn, line
	}
	rest := line[len(m[0]):]
	switch m[1] {
	case "ERROR":
		return slog.LevelError, rest
	case "INFO":
		return slog.LevelInfo, rest
	case "DEBUG", "TRACE":
		return slog.LevelDebug, rest
	}
	return slog.LevelWarn, rest
}

// Package node serves a gpuledger ledger over gRPC and replicates it with
// raft. A single node is a one-voter raft cluster: every write goes through
// the raft log, and the FSM applies committed batches with ledger.Apply.
//
// Writes are group-committed: concurrent Append and AppendBatch calls are
// gathered for up to Config.BatchWindow into one raft command, whose
// envelopes are verified (ledger.Preverify) before it is proposed, so that
// verification of the next batch overlaps the commit of the previous one.
package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/mod/sumdb/note"
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
}

// DefaultConfig returns the defaults for a node named name storing in dir.
func DefaultConfig(name, dir string) Config {
	return Config{
		Name:              name,
		Dir:               dir,
		BatchWindow:       2 * time.Millisecond,
		MaxBatchEnvelopes: ledger.DefaultMaxBatchEnvelopes,
		ApplyTimeout:      10 * time.Second,
		ReadWait:          2 * time.Second,
	}
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
	case c.BatchWindow < 0 || c.ApplyTimeout <= 0 || c.ReadWait < 0:
		return errors.New("node config: BatchWindow, ApplyTimeout and ReadWait must not be negative")
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

	in      chan *request
	stop    chan struct{}
	stopped sync.WaitGroup

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
	// The raft log is fsynced before a command commits, and the ledger
	// records the raft index of each batch in the same transaction, so after
	// a crash raft replays exactly what the ledger lost. The ledger need not
	// fsync each batch; Snapshot syncs it before raft may compact the log.
	lcfg.SyncWrites = false
	l, err := ledger.Open(ctx, lcfg)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, ledger: l, health: health.NewServer(),
		in: make(chan *request, 4096), stop: make(chan struct{})}
	ch := make(chan struct{})
	n.applied.Store(&ch)
	if err := n.startRaft(); err != nil {
		l.Close()
		return nil, err
	}
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	n.stopped.Add(1)
	go n.batcher()
	return n, nil
}

func (n *Node) startRaft() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: slogWriter{n.log}, DisableTime: true})
	// The FSM is durable (the ledger records the last applied raft index in the
	// same transaction as each batch), so nothing is restored from a snapshot
	// at start: raft replays only what the ledger has not applied.
	rc.NoSnapshotRestoreOnStart = true
	// One voter: elect quickly.
	rc.HeartbeatTimeout = 300 * time.Millisecond
	rc.ElectionTimeout = 300 * time.Millisecond
	rc.LeaderLeaseTimeout = 150 * time.Millisecond
	store, err := openRaftStore(filepath.Join(n.cfg.Dir, "raft", "log"), n.log)
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(n.cfg.Dir, "raft"), 2, slogWriter{n.log})
	if err != nil {
		store.Close()
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	addr, trans := raft.NewInmemTransport(raft.ServerAddress(n.cfg.Name))
	existing, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		store.Close()
		return fmt.Errorf("raft state: %w", err)
	}
	if !existing {
		if err := raft.BootstrapCluster(rc, store, store, snaps, trans, raft.Configuration{
			Servers: []raft.Server{{ID: rc.LocalID, Address: addr, Suffrage: raft.Voter}},
		}); err != nil {
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
	return nil
}

// WaitLeader blocks until this node leads (a one-voter cluster elects itself
// within a second) or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
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

// Ledger returns the node's ledger (for reads).
func (n *Node) Ledger() *ledger.Ledger { return n.ledger }

// Close stops the node: writes stop being accepted, raft shuts down, then
// the ledger closes. The gRPC server must have stopped first.
func (n *Node) Close(ctx context.Context) error {
	close(n.stop)
	n.stopped.Wait()
	n.health.Shutdown()
	var errs []error
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft log: %w", err))
	}
	if err := n.ledger.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// notifyApplied wakes readers waiting for new entries.
func (n *Node) notifyApplied() {
	ch := make(chan struct{})
	old := n.applied.Swap(&ch)
	close(*old)
}

// waitApplied returns a channel closed at the next applied batch.
func (n *Node) waitApplied() <-chan struct{} { return *n.applied.Load() }

// raiseAlarm stops the node from serving: it would diverge from the log.
func (n *Node) raiseAlarm(msg string) {
	n.alarm.Store(&msg)
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	n.log.Error("node alarm: stopped applying", "reason", msg)
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
		return fsmResponse{err: fmt.Errorf("raft entry %d was applied before a restart", lg.Index)} // replay
	}
	if a := n.alarmText(); a != "" {
		return fsmResponse{err: errUnavailable{"node stopped applying: " + a}}
	}
	at, envs, err := decodeBatch(lg.Data)
	if err != nil {
		n.raiseAlarm(fmt.Sprintf("raft entry %d: %v", lg.Index, err))
		return fsmResponse{err: err}
	}
	rs, err := n.ledger.Apply(context.Background(), ledger.Batch{AcceptedAt: at, Envelopes: envs, AppliedIndex: lg.Index})
	if err != nil {
		if rej := (*custody.Error)(nil); errors.As(err, &rej) && rej.Code == custody.TooLarge {
			return fsmResponse{err: err} // over a limit: nothing applied on any node
		}
		n.raiseAlarm(fmt.Sprintf("raft entry %d: %v", lg.Index, err))
		return fsmResponse{err: err}
	}
	n.notifyApplied()
	return fsmResponse{results: rs}
}

// Snapshot records how far the ledger has applied, after making it durable:
// raft may then compact its log up to that index. The ledger itself is the
// state; the snapshot is only the marker.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.n.ledger.Sync(); err != nil {
		return nil, err
	}
	return appliedSnapshot(f.n.ledger.AppliedIndex()), nil
}

// Restore accepts a snapshot the ledger has already applied; catching up a
// store from a peer's snapshot is not supported by a single node.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	if idx := binary.BigEndian.Uint64(b[:]); idx > f.n.ledger.AppliedIndex() {
		return fmt.Errorf("snapshot at raft index %d is ahead of the ledger (%d): the store is missing entries", idx, f.n.ledger.AppliedIndex())
	}
	return nil
}

type appliedSnapshot uint64

func (s appliedSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(s))); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (appliedSnapshot) Release() {}

// slogWriter adapts raft's line logger to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(p)), "component", "raft")
	return len(p), nil
}

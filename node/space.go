package node

import (
	"fmt"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// A full disk must not take a node down. badger writes through memory maps
// of files it sizes ahead, sparsely (see ledger.SparseReserveBytes), and a
// store that writes into such a page with no room left on the disk dies of
// SIGBUS — and again at every restart, when it replays. So the node keeps
// free space: it reads its data directory's free space every
// spaceCheckInterval and, below Config.MinFreeSpace (which must exceed what
// the stores hold reserved: 800 MiB with the node's options, 1 GiB by
// default), it
//
//   - refuses writes with RESOURCE_EXHAUSTED / NO_SPACE saying why (a leader
//     also hands leadership to another node, which may have room);
//   - as a follower, stores no more of the leader's entries (it falls behind
//     and catches up when space returns);
//   - goes on serving reads;
//   - sets the health service "gpuledger.writes" to NOT_SERVING (the
//     node's overall status stays SERVING: reads are served) and lists the
//     condition in GetClusterStatus's warnings;
//
// and clears all of it when space returns. A node that starts with less
// free space opens its store read-only (badger then writes nothing), takes
// no part in raft and serves reads; when space returns, SpaceBack's channel
// closes and the node must be reopened (gpuledgerd serve does it).

// spaceCheckInterval is how often the node reads its free disk space.
const spaceCheckInterval = 500 * time.Millisecond

// WritesService is the health service name that reports whether the node
// accepts writes (NOT_SERVING while it is short of disk space).
const WritesService = "gpuledger.writes"

// ReasonNoSpace is the ErrorInfo reason of a write refused for lack of disk
// space.
const ReasonNoSpace = "NO_SPACE"

// DefaultMinFreeSpace is the free disk space below which a node accepts no
// writes.
const DefaultMinFreeSpace = 1 << 30

// minFreeFloor is the least MinFreeSpace may be: what the stores hold
// reserved and unwritten.
const minFreeFloor = ledger.SparseReserveBytes + raftSparseReserveBytes

// spaceState is what the node knows of its free disk space.
type spaceState struct {
	low  bool      // below MinFreeSpace at the last check
	free uint64    // bytes free at the last check
	at   time.Time // when
}

// writeCheckAge is how old a reading a write may rely on; older, the write
// reads the free space again (a statfs, about a microsecond).
const writeCheckAge = 50 * time.Millisecond

// checkSpace reads the free space and updates the node's state; it returns
// whether the node is short of space.
func (n *Node) checkSpace() bool {
	if n.cfg.MinFreeSpace == 0 {
		return false
	}
	free, err := freeBytes(n.cfg.Dir)
	if err != nil {
		n.log.Warn("cannot read the data directory's free space", "dir", n.cfg.Dir, "err", err)
		return n.space.Load().low
	}
	low := free < n.cfg.MinFreeSpace
	old := n.space.Swap(&spaceState{low: low, free: free, at: time.Now()})
	switch {
	case low && !old.low:
		n.log.Error("disk space low: refusing writes until space is freed; reads go on",
			"dir", n.cfg.Dir, "free", humanize.IBytes(free), "min_free_space", humanize.IBytes(n.cfg.MinFreeSpace))
		n.health.SetServingStatus(WritesService, healthpb.HealthCheckResponse_NOT_SERVING)
		if r := n.raftp.Load(); r != nil && r.State() == raft.Leader && n.Cluster() > 1 {
			go r.LeadershipTransfer() // another node may have room
		}
	case !low && old.low:
		n.log.Info("disk space is back: accepting writes again", "dir", n.cfg.Dir, "free", humanize.IBytes(free))
		if !n.readOnly {
			n.health.SetServingStatus(WritesService, healthpb.HealthCheckResponse_SERVING)
		}
	}
	return low
}

// watchSpace checks the free space until the node stops; a read-only node's
// SpaceBack channel is closed when space returns.
func (n *Node) watchSpace() {
	defer n.stopped.Done()
	t := time.NewTicker(spaceCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !n.checkSpace() && n.readOnly {
			n.spaceOnce.Do(func() { close(n.spaceBack) })
		}
	}
}

// SpaceBack returns a channel closed when a node that opened its store
// read-only for lack of disk space has room again: reopen it to resume.
// It is nil for a node that opened its store for writing.
func (n *Node) SpaceBack() <-chan struct{} {
	if !n.readOnly {
		return nil
	}
	return n.spaceBack
}

// noSpace returns the refusal of a write while the node is short of disk
// space, or nil.
func (n *Node) noSpace() error {
	if st := n.space.Load(); !n.readOnly && time.Since(st.at) > writeCheckAge {
		n.checkSpace()
	}
	st := n.space.Load()
	if !st.low && !n.readOnly {
		return nil
	}
	what := "accepts no writes until space is freed"
	if n.readOnly {
		what = "started on it with its store read-only and takes no part in the cluster until space is freed"
	}
	return withInfo(codes.ResourceExhausted, ReasonNoSpace, fmt.Sprintf(
		"node %s has %s free in %s, less than its --min-free-space of %s: it %s (reads go on); write through another node or free disk space",
		n.cfg.Name, humanize.IBytes(st.free), n.cfg.Dir, humanize.IBytes(n.cfg.MinFreeSpace), what), nil)
}

// spaceWarning describes a shortage of disk space for GetClusterStatus, or "".
func (n *Node) spaceWarning() string {
	if err := n.noSpace(); err != nil {
		return ReasonNoSpace + ": " + statusMessage(err)
	}
	return ""
}

// statusMessage is a gRPC error's message.
func statusMessage(err error) string { return status.Convert(err).Message() }

// haveRoom reports whether the data directory has room for a write at all
// (a guard turned off still needs the disk not to be full).
func (n *Node) haveRoom() bool {
	free, err := freeBytes(n.cfg.Dir)
	return err != nil || free >= minFreeFloor
}

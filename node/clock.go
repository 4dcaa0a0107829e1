package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The leader dates each batch it proposes (accepted_at) with its own clock,
// and every replica applies the batch with that date, so that all agree. A
// leader's clock could otherwise be law: dated years ahead, a batch would let
// events dated then pass the future-time rule and hold SILENT off; dated
// years behind, it would back-date what it accepts. So each follower judges
// the date of every batch the leader sends before it stores it in its raft
// log (raftStore.StoreLogs calls checkLeaderTime), against what it knows
// itself:
//
//   - not more than the policy's clock skew ahead of the follower's own clock;
//   - not more than the clock skew before the batch before it in the log (the
//     ledger's time does not run backwards; Apply also dates a batch a little
//     behind at its predecessor's time, and refuses one further behind, on
//     every replica alike);
//   - when the follower is keeping up (its previous append of entries was
//     less than liveWindow ago and held fewer than raft's MaxAppendEntries, so
//     the leader had sent all it had), not more than the clock skew before
//     that previous append by the follower's clock: a leader whose clock stands
//     still is caught too.
//
// A follower refuses a batch that fails: it does not store it, so it never
// applies it and never cosigns a checkpoint that includes it, and a batch
// the majority refuses is never committed. It then distrusts the leader for
// distrustFor: it closes their raft connections and refuses new ones, so it
// hears no more heartbeats from it, grants it no vote and, with the other
// honest nodes, elects another leader. The refusal is logged and shown in
// GetClusterStatus's warnings.
//
// The future-time rule for events (occurred_at at most the clock skew after
// accepted_at) is then judged by every replica against the batch's
// accepted_at, the one date in the raft command: deterministic, and bounded
// by the honest followers' clocks.

// distrustFor is how long a follower distrusts a leader whose batch it
// refused for its date.
const distrustFor = time.Minute

// liveWindow is how recent a follower's previous append must be for it to
// judge a batch's date against its own clock from below.
const liveWindow = 2 * time.Second

// clockState is what a node remembers of the raft log's dates.
type clockState struct {
	mu        sync.Mutex
	lastAt    time.Time // the date of the last batch stored in the raft log
	lastStore time.Time // when (by this node's clock) entries were last stored
	lastCount int       // how many entries that store held
	distrust  map[string]distrusted
	proposed  time.Time // the date of the last batch this node proposed
}

type distrusted struct {
	until time.Time
	why   string
	// since is when this node first saw another leader than the distrusted
	// node; distrust ends rehabilitateAfter later (the old leader then
	// rejoins as a follower: a node that has a leader grants no votes).
	since time.Time
}

// rehabilitateAfter is how long another leader must have led before a
// distrusted node is let back in as a follower.
const rehabilitateAfter = 5 * time.Second

// batchDate returns the date a batch is proposed with: the node's clock, but
// never before the last batch's. With Config.Clock (a test hook) it is that
// clock's time as it is: a leader that dates batches as it pleases.
func (n *Node) batchDate() time.Time {
	if n.cfg.Clock != nil {
		return n.cfg.Clock()
	}
	at := time.Now()
	n.clock.mu.Lock()
	defer n.clock.mu.Unlock()
	last := n.clock.proposed
	if l := n.ledger.LastAcceptedAt(); l.After(last) {
		last = l
	}
	if at.Before(last) {
		at = last
	}
	n.clock.proposed = at
	return at
}

// checkLeaderTime judges the dates of the batches raft is about to store
// (see above). It returns an error, and stores nothing, when the leader's
// clock is out of tolerance.
func (n *Node) checkLeaderTime(logs []*raft.Log) error {
	r := n.raftp.Load() // nil while raft starts: n.raft is set once NewRaft returns
	follower := r == nil || r.State() != raft.Leader
	skew := n.ledger.Registry().Policy().ClockSkew()
	wall := time.Now()
	n.clock.mu.Lock()
	defer n.clock.mu.Unlock()
	live := !n.clock.lastStore.IsZero() && wall.Sub(n.clock.lastStore) < liveWindow && n.clock.lastCount < maxAppendEntries
	// The last date this node holds as a follower, or applied: not what it
	// proposed itself as a leader that was not committed.
	lastAt := n.clock.lastAt
	if a := n.ledger.LastAcceptedAt(); a.After(lastAt) {
		lastAt = a
	}
	if !follower {
		return nil
	}
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		at, ok := batchTime(l.Data)
		if !ok {
			continue // Apply raises the alarm for a malformed command
		}
		var why string
		switch {
		case at.After(wall.Add(skew)):
			why = fmt.Sprintf("it dated raft entry %d %s, %v ahead of this node's clock (the clock skew allowed is %v)",
				l.Index, at.UTC().Format(time.RFC3339), at.Sub(wall).Round(time.Second), skew)
		case !lastAt.IsZero() && at.Before(lastAt.Add(-skew)):
			why = fmt.Sprintf("it dated raft entry %d %s, %v before the entry before it (the clock skew allowed is %v)",
				l.Index, at.UTC().Format(time.RFC3339), lastAt.Sub(at).Round(time.Second), skew)
		case live && at.Before(n.clock.lastStore.Add(-skew)):
			why = fmt.Sprintf("it dated raft entry %d %s, %v behind this node's clock while this node keeps up (the clock skew allowed is %v)",
				l.Index, at.UTC().Format(time.RFC3339), wall.Sub(at).Round(time.Second), skew)
		}
		if why != "" {
			if r != nil {
				_, leader := r.LeaderWithID()
				go n.distrust(string(leader), why)
			}
			return fmt.Errorf("refused the leader's batch: %s", why)
		}
		if at.After(lastAt) {
			lastAt = at
		}
	}
	n.clock.lastAt = lastAt
	n.clock.lastStore, n.clock.lastCount = wall, len(logs)
	return nil
}

// maxAppendEntries is raft's limit of entries per AppendEntries (the
// default of raft.Config.MaxAppendEntries, which the node keeps).
const maxAppendEntries = 64

// distrust makes this node refuse raft traffic with peer for distrustFor.
func (n *Node) distrust(peer, why string) {
	if peer == "" || peer == n.cfg.Name {
		return
	}
	n.clock.mu.Lock()
	if n.clock.distrust == nil {
		n.clock.distrust = make(map[string]distrusted)
	}
	_, already := n.clock.distrust[peer]
	n.clock.distrust[peer] = distrusted{until: time.Now().Add(distrustFor), why: why}
	n.clock.mu.Unlock()
	if !already {
		n.log.Error("refused the leader's batch for its date: distrusting the leader, so that the other nodes elect another",
			"leader", peer, "reason", why, "for", distrustFor)
	}
	if n.mux == nil {
		return
	}
	if a := n.mux.auth.Load(); a != nil {
		a.cut(peer)
	}
}

// distrusted says why this node refuses raft traffic with peer, or "".
// Distrust ends after distrustFor, or once another node has led for
// rehabilitateAfter.
func (n *Node) distrusted(peer string) string {
	var leader raft.ServerID
	if r := n.raftp.Load(); r != nil {
		_, leader = r.LeaderWithID()
	}
	n.clock.mu.Lock()
	defer n.clock.mu.Unlock()
	d, ok := n.clock.distrust[peer]
	if !ok {
		return ""
	}
	now := time.Now()
	if leader != "" && string(leader) != peer && d.since.IsZero() {
		d.since = now
		n.clock.distrust[peer] = d
	}
	if now.After(d.until) || (!d.since.IsZero() && now.Sub(d.since) > rehabilitateAfter) {
		delete(n.clock.distrust, peer)
		n.log.Info("no longer distrusting a node: another has led since", "node", peer)
		return ""
	}
	return d.why
}

// warnings lists what an operator should look at that does not stop the
// node.
func (n *Node) warnings() []string {
	var out []string
	if w := n.spaceWarning(); w != "" {
		out = append(out, w)
	}
	if n.mux != nil {
		if open, refused := n.mux.Connections(); refused > 0 {
			out = append(out, fmt.Sprintf("refused %d client connections at the connection limit since the node started (limit %d, %d open now): raise --max-connections (and ulimit -n) if they are legitimate",
				refused, n.mux.limit, open))
		}
	}
	n.clock.mu.Lock()
	defer n.clock.mu.Unlock()
	now := time.Now()
	for peer, d := range n.clock.distrust {
		if now.Before(d.until) {
			out = append(out, fmt.Sprintf("distrusting node %s until %s: %s", peer, d.until.UTC().Format(time.RFC3339), d.why))
		}
	}
	return out
}

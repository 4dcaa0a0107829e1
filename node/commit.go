package node

import (
	"context"
	"fmt"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
)

// request is one caller's envelopes waiting to be group-committed.
type request struct {
	envs  [][]byte
	bytes int
	done  chan response // buffered, 1
}

type response struct {
	results []ledger.Result
	err     error
}

// submit hands envelopes to the group committer and waits for their results.
func (n *Node) submit(ctx context.Context, envs [][]byte) ([]ledger.Result, error) {
	if a := n.alarmText(); a != "" {
		return nil, errUnavailable{"node stopped applying: " + a}
	}
	size := 0
	for _, e := range envs {
		size += len(e)
	}
	r := &request{envs: envs, bytes: size, done: make(chan response, 1)}
	select {
	case n.in <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.stop:
		return nil, errUnavailable{"node is shutting down"}
	}
	select {
	case resp := <-r.done:
		return resp.results, resp.err
	case <-ctx.Done():
		// The write may still commit; a retry of the same bytes is idempotent.
		return nil, ctx.Err()
	}
}

// batcher gathers requests for up to BatchWindow (or until a batch is full)
// and proposes each group as one raft command. It does not wait for a
// command to commit before gathering the next, so raft pipelines them.
func (n *Node) batcher() {
	defer n.stopped.Done()
	var carry *request
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-n.in:
			case <-n.stop:
				return
			}
		}
		group := []*request{first}
		count, size := len(first.envs), first.bytes
		timer := time.NewTimer(n.cfg.BatchWindow)
	gather:
		for count < n.cfg.MaxBatchEnvelopes {
			select {
			case r := <-n.in:
				if count+len(r.envs) > n.cfg.MaxBatchEnvelopes || size+r.bytes > ledger.DefaultMaxBatchBytes {
					carry = r
					break gather
				}
				group = append(group, r)
				count += len(r.envs)
				size += r.bytes
			case <-timer.C:
				break gather
			case <-n.stop:
				timer.Stop()
				for _, r := range group {
					r.done <- response{err: errUnavailable{"node is shutting down"}}
				}
				return
			}
		}
		timer.Stop()
		n.propose(group, count)
	}
}

// propose verifies a group's envelopes, proposes them as one raft command and
// hands each request its own results once the command is applied.
func (n *Node) propose(group []*request, count int) {
	envs := make([][]byte, 0, count)
	for _, r := range group {
		envs = append(envs, r.envs...)
	}
	n.ledger.Preverify(envs)
	f := n.raft.Apply(encodeBatch(time.Now(), *n.lastBatch.Load(), envs), n.cfg.ApplyTimeout)
	go func() {
		fail := func(err error) {
			for _, r := range group {
				r.done <- response{err: err}
			}
		}
		if err := f.Error(); err != nil {
			fail(err)
			return
		}
		resp, ok := f.Response().(fsmResponse)
		if !ok {
			fail(fmt.Errorf("unexpected raft response %T", f.Response()))
			return
		}
		if resp.err != nil {
			fail(resp.err)
			return
		}
		i := 0
		for _, r := range group {
			r.done <- response{results: resp.results[i : i+len(r.envs)]}
			i += len(r.envs)
		}
	}()
}

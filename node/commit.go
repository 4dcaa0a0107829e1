package node

import (
	"context"
	"fmt"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
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
	if size > ledger.DefaultMaxBatchBytes {
		return nil, custody.Reject(custody.TooLarge, custody.ReasonTooLarge,
			"the envelopes come to %d bytes; at most %d a call: split them", size, ledger.DefaultMaxBatchBytes)
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

// propose verifies a group's envelopes, proposes those that may be
// accepted as one raft command, and hands each request its own results once
// the command is applied. What Apply would refuse in any case (malformed,
// over a limit, unsigned, a signature that does not verify, a key the
// registry does not hold) is refused here and never reaches the raft log,
// so a client that is not a participant cannot grow it. A key the registry
// does not hold yet may be added by a registry change in flight (proposed,
// not yet applied, or earlier in this group); while one is, such envelopes
// are proposed and Apply decides.
func (n *Node) propose(group []*request, count int) {
	envs := make([][]byte, 0, count)
	for _, r := range group {
		envs = append(envs, r.envs...)
	}
	verdicts := n.ledger.Preverify(envs)
	early := make([]error, len(envs)) // the refusals made here
	keep := envs[:0:0]
	changes := n.changesInFlight.Load() > 0
	changed := false
	for i, v := range verdicts {
		switch {
		case v.Err != nil:
			early[i] = v.Err
		case v.UnknownKey != nil && !changes && !changed:
			early[i] = v.UnknownKey
		default:
			keep = append(keep, envs[i])
			changed = changed || v.Change
		}
	}
	n.refusedEarly.Add(uint64(len(envs) - len(keep)))
	deliver := func(results []ledger.Result, err error) {
		i, k := 0, 0
		for _, r := range group {
			out := make([]ledger.Result, len(r.envs))
			var rerr error
			for j := range r.envs {
				switch {
				case early[i] != nil:
					out[j] = ledger.Result{Err: early[i]}
				case err != nil:
					rerr = err
				default:
					out[j] = results[k]
					k++
				}
				i++
			}
			if rerr != nil {
				r.done <- response{err: rerr}
			} else {
				r.done <- response{results: out}
			}
		}
	}
	if len(keep) == 0 {
		deliver(nil, nil)
		return
	}
	if changed {
		n.changesInFlight.Add(1)
	}
	f := n.raft.Apply(encodeBatch(n.batchDate(), *n.lastBatch.Load(), keep), n.cfg.ApplyTimeout)
	go func() {
		if changed {
			defer n.changesInFlight.Add(-1)
		}
		if err := f.Error(); err != nil {
			deliver(nil, err)
			return
		}
		resp, ok := f.Response().(fsmResponse)
		switch {
		case !ok:
			deliver(nil, fmt.Errorf("unexpected raft response %T", f.Response()))
		case resp.err != nil:
			deliver(nil, resp.err)
		default:
			deliver(resp.results, nil)
		}
	}()
}

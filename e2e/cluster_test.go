package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/gpuledger/gpuledger/client"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// cluster is a development consortium's nodes, each a gpuledgerd serve
// process on its own loopback port.
type cluster struct {
	t     *testing.T
	dir   string
	addrs []string
	nodes []*devNode // nil while stopped
	extra []string   // flags every node gets
}

// freeAddrs reserves n loopback ports (listen, note the port, close).
func freeAddrs(t *testing.T, n int) []string {
	var out []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// startCluster creates a development consortium of three nodes and starts
// the founders (node-<i> for i in founders, 1-based) with --peers listing
// them; the others are left stopped.
func startCluster(t *testing.T, founders []int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), addrs: freeAddrs(t, 3), nodes: make([]*devNode, 3), extra: extra}
	if out, errOut, code := run(t, bin.daemon, "dev", "--data", c.dir, "--nodes", "3"); code != 0 {
		t.Fatalf("gpuledgerd dev --nodes 3: exit %d\n%s%s", code, out, errOut)
	}
	// TLS everywhere: every node serves TLS with the development CA's
	// certificate, the nodes talk TLS over their node keys, and the CLI
	// trusts the CA.
	t.Setenv("GPULEDGER_CACERT", c.ca())
	t.Setenv("GPULEDGER_GENESIS", filepath.Join(c.dir, "genesis.json")) // every receipt verified
	var peers []string
	for _, i := range founders {
		peers = append(peers, fmt.Sprintf("node-%d=%s", i, c.addrs[i-1]))
	}
	for _, i := range founders {
		c.start(i, "--peers", strings.Join(peers, ","))
	}
	c.waitLeader(founders...)
	return c
}

// start starts node-i (1-based) with the cluster's flags and args.
func (c *cluster) start(i int, args ...string) *devNode {
	c.t.Helper()
	name := fmt.Sprintf("node-%d", i)
	full := append([]string{"serve", "--data", filepath.Join(c.dir, name), "--genesis", filepath.Join(c.dir, "genesis.json"),
		"--node-key", filepath.Join(c.dir, name+".key"), "--listen", c.addrs[i-1],
		"--tls-cert", filepath.Join(c.dir, "tls", name+".pem"), "--tls-key", filepath.Join(c.dir, "tls", name+".key")}, c.extra...)
	d := startDaemon(c.t, c.dir, append(full, args...)...)
	d.ca = c.ca()
	c.nodes[i-1] = d
	return d
}

// ca is the development CA that issued the nodes' certificates.
func (c *cluster) ca() string { return filepath.Join(c.dir, "tls", "ca.pem") }

// kill9 kills node-i without warning.
func (c *cluster) kill9(i int) {
	d := c.nodes[i-1]
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd, c.nodes[i-1] = nil, nil
}

// stop stops node-i cleanly.
func (c *cluster) stop(i int) {
	c.nodes[i-1].stop()
	c.nodes[i-1] = nil
}

type nodeStatus struct {
	Node, Role, Leader, Alarm string
	AppliedSize               uint64 `json:",string"`
	Stale                     bool
}

func (c *cluster) status(i int) (nodeStatus, error) {
	var st nodeStatus
	// As the auditor: a node with read scope authenticated or scoped
	// answers registered participants only.
	out, errOut, code := run(c.t, bin.cli, "--node", c.addrs[i-1], "--timeout", "3s", "--identity", c.key("audit-office"), "cluster", "status", "-o", "json")
	if code != 0 {
		return st, fmt.Errorf("cluster status of node-%d: exit %d: %s", i, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("cluster status of node-%d: %v\n%s", i, err, out)
	}
	return st, nil
}

// waitLeader waits until the given nodes agree on a leader among them and
// returns its number.
func (c *cluster) waitLeader(nodes ...int) int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		leaders := map[string]bool{}
		for _, i := range nodes {
			st, err := c.status(i)
			n, _ := strconv.Atoi(strings.TrimPrefix(st.Leader, "node-"))
			if err == nil && slices.Contains(nodes, n) {
				leaders[st.Leader] = true
			} else {
				leaders[""] = true
			}
		}
		if len(leaders) == 1 && !leaders[""] {
			for l := range leaders {
				n, _ := strconv.Atoi(strings.TrimPrefix(l, "node-"))
				if n > 0 {
					return n
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("nodes %v agree on no leader", nodes)
	return 0
}

// waitConverged waits until the given nodes have applied the same size, at
// least min, and returns it.
func (c *cluster) waitConverged(min uint64, nodes ...int) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var sizes []uint64
	for time.Now().Before(deadline) {
		sizes = sizes[:0]
		for _, i := range nodes {
			st, _ := c.status(i)
			sizes = append(sizes, st.AppliedSize)
		}
		if sizes[0] >= min && allEqual(sizes) {
			return sizes[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("nodes %v did not converge to a size of at least %d: %v", nodes, min, sizes)
	return 0
}

// tamperedFollower starts a cluster of three, writes n serials named
// prefix-NN through the leader, stops a follower, alters its store with
// change (nil: alters the snapshot of its serial map's top levels, as
// TestClusterTamperedMap wants), restarts it and waits until all three have
// the same log again.
func tamperedFollower(t *testing.T, prefix string, n int, change func(*badger.Txn)) (c *cluster, leader, follower int, d *devNode) {
	t.Helper()
	c = startCluster(t, []int{1, 2, 3})
	leader = c.waitLeader(1, 2, 3)
	follower = leader%3 + 1
	for k := range n {
		if code, out := c.manufacture(leader, fmt.Sprintf("%s-%02d", prefix, k)); code != 0 {
			t.Fatalf("write: %s", out)
		}
	}
	size := c.waitConverged(uint64(n), 1, 2, 3)
	c.stop(follower)
	if change == nil {
		// The snapshot file of the map's top levels: in every tile at
		// depth 4, the last byte (a hash of a node below it). The root tile
		// is intact, so the follower opens; the next serial's path passes
		// through one of the tiles, so its next root is not the leader's.
		alterMapSnapshot(t, filepath.Join(c.dir, fmt.Sprintf("node-%d", follower), "ledger"), 4)
	} else {
		tamperAt(t, filepath.Join(c.dir, fmt.Sprintf("node-%d", follower), "ledger"), change)
	}
	d = c.start(follower)
	c.waitConverged(size, 1, 2, 3)
	return c, leader, follower, d
}

// waitAlarm waits until node-i (d) raises an alarm that says want.
func (c *cluster) waitAlarm(i int, d *devNode, want string) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _ := c.status(i)
		if strings.Contains(st.Alarm, want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node-%d did not raise its alarm (%q): %+v\n%s", i, want, st, d.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func allEqual(xs []uint64) bool {
	for _, x := range xs {
		if x != xs[0] {
			return false
		}
	}
	return true
}

func (c *cluster) key(id string) string { return filepath.Join(c.dir, "keys", id+".key") }

var acceptedRE = regexp.MustCompile(`accepted: entry (\d+)`)

// manufacture submits a manufacture event through node-i and returns the
// CLI's exit code and output.
func (c *cluster) manufacture(i int, serial string) (int, string) {
	out, errOut, code := run(c.t, bin.cli, "--node", c.addrs[i-1], "--timeout", "5s", "submit", "manufacture",
		"--key", c.key("acme-gpu"), "--serial", serial, "--model", "H100-SXM5-80GB")
	return code, out + errOut
}

// cosigned returns node-i's checkpoint cosigned by all three nodes, with
// its signatures checked here with x/mod's note package against the nodes'
// verifier keys (node-<i>.pub), and the body.
func (c *cluster) cosigned(i int) string {
	c.t.Helper()
	out, errOut, code := run(c.t, bin.cli, "--node", c.addrs[i-1], "checkpoint", "--min-cosigners", "3")
	if code != 0 {
		c.t.Fatalf("checkpoint --min-cosigners 3 from node-%d: exit %d\n%s", i, code, errOut)
	}
	var vs []note.Verifier
	for j := 1; j <= 3; j++ {
		b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node-%d.pub", j)))
		if err != nil {
			c.t.Fatal(err)
		}
		v, err := note.NewVerifier(strings.TrimSpace(string(b)))
		if err != nil {
			c.t.Fatal(err)
		}
		vs = append(vs, v)
	}
	n, err := note.Open([]byte(out), note.VerifierList(vs...))
	if err != nil {
		c.t.Fatalf("node-%d's cosigned checkpoint does not verify: %v\n%s", i, err, out)
	}
	if len(n.Sigs) != 3 {
		c.t.Fatalf("node-%d's cosigned checkpoint has %d verified signatures, want 3:\n%s", i, len(n.Sigs), out)
	}
	return n.Text
}

// conn dials node-i for direct gRPC reads.
func (c *cluster) conn(i int) gpuledgerv1grpc.LedgerServiceClient {
	cc, err := client.Dial(c.addrs[i-1], client.Options{CACertFile: c.ca()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return gpuledgerv1grpc.NewLedgerServiceClient(cc)
}

// TestClusterConverges: two founders and a third node that joins; writes
// through each node (followers forward them); all three converge to the same
// size and root, and each gives one checkpoint signed by all three nodes
// (three organisations), which the CLI's verify accepts with --min-signers 3.
func TestClusterConverges(t *testing.T) {
	c := startCluster(t, []int{1, 2})
	// node-3 asks the founder that does not lead, which forwards the request.
	follower := 3 - c.waitLeader(1, 2)
	c.start(3, "--join", c.addrs[follower-1])
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.status(3)
		if err == nil && st.Leader != "" && st.Role == "follower" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-3 did not join: %+v %v\n%s", st, err, c.nodes[2].out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 1; i <= 3; i++ {
		for k := range 3 {
			if code, out := c.manufacture(i, fmt.Sprintf("GPU-C%d-%d", i, k)); code != 0 || !acceptedRE.MatchString(out) {
				t.Fatalf("write through node-%d: exit %d\n%s", i, code, out)
			}
		}
	}
	// Read your own writes on another node: --min-index waits for the entry;
	// a size no node has reached fails clearly after a short wait.
	code, out := c.manufacture(1, "GPU-C-mine")
	m := acceptedRE.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("write: %s", out)
	}
	idx, _ := strconv.ParseUint(m[1], 10, 64)
	if out, errOut, code := run(t, bin.cli, "--node", c.addrs[2], "--min-index", fmt.Sprint(idx+1), "serial", "GPU-C-mine"); code != 0 || !strings.Contains(out, "GPU-C-mine") {
		t.Fatalf("serial --min-index %d on node-3: exit %d\n%s%s", idx+1, code, out, errOut)
	}
	if out, errOut, code := run(t, bin.cli, "--node", c.addrs[1], "--min-index", "1000000", "history", "GPU-C-mine"); code == 0 || !strings.Contains(errOut, "STALE_READ") || !strings.Contains(errOut, "fewer than min_index 1000000") {
		t.Fatalf("history --min-index 1000000: exit %d\n%s%s", code, out, errOut)
	}
	size := c.waitConverged(10, 1, 2, 3)
	var bodies []string
	for i := 1; i <= 3; i++ {
		bodies = append(bodies, c.cosigned(i))
	}
	if bodies[0] != bodies[1] || bodies[1] != bodies[2] || !strings.Contains(bodies[0], fmt.Sprintf("\n%d\n", size)) {
		t.Fatalf("the nodes' checkpoints differ or are not of size %d:\n%s", size, strings.Join(bodies, "--\n"))
	}
	out, errOut, code := run(t, bin.cli, "--node", c.addrs[2], "verify", "--genesis", filepath.Join(c.dir, "genesis.json"),
		"--min-signers", "3", "--trust-dir", t.TempDir(), "GPU-C1-0")
	if code != 0 || !strings.Contains(out, "OK GPU-C1-0") {
		t.Fatalf("verify --min-signers 3: exit %d\n%s%s", code, out, errOut)
	}
	// A passport whose checkpoint three organisations' nodes signed verifies
	// offline with --min-signers 3; one signed by a single node does not.
	dir := t.TempDir()
	for _, k := range []string{"1", "3"} {
		file := filepath.Join(dir, k+".passport")
		if out, errOut, code := run(t, bin.cli, "--node", c.addrs[1], "passport", "GPU-C2-1", "--min-cosigners", k, "--file", file); code != 0 {
			t.Fatalf("passport --min-cosigners %s: exit %d\n%s%s", k, code, out, errOut)
		}
		out, _, code := run(t, bin.cli, "verify", "--passport", file, "--genesis", filepath.Join(c.dir, "genesis.json"), "--min-signers", "3")
		if ok := code == 0 && strings.HasPrefix(out, "OK passport of GPU-C2-1"); ok != (k == "3") {
			t.Fatalf("verify --min-signers 3 of a passport cosigned by %s: exit %d\n%s", k, code, out)
		}
	}
	// A node that is not in the registry cannot join.
	stranger := filepath.Join(t.TempDir(), "stranger.key")
	if _, errOut, code := run(t, bin.cli, "nodekey", "--name", "node-9", "--out", stranger); code != 0 {
		t.Fatalf("nodekey: %s", errOut)
	}
	lis := freeAddrs(t, 1)[0]
	d := startDaemon(t, t.TempDir(), "serve", "--data", t.TempDir(), "--genesis", filepath.Join(c.dir, "genesis.json"),
		"--node-key", stranger, "--listen", lis, "--join", c.addrs[0],
		"--tls-cert", filepath.Join(c.dir, "tls", "node-3.pem"), "--tls-key", filepath.Join(c.dir, "tls", "node-3.key")) // a loopback certificate of the CA
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(d.out.String(), "PermissionDenied") {
		if time.Now().After(deadline) {
			t.Fatalf("an unregistered node's join was not refused:\n%s", d.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	members := func() string {
		out, _, _ := run(t, bin.cli, "--node", c.addrs[0], "cluster", "status")
		return out
	}
	if strings.Contains(members(), "node-9") {
		t.Fatalf("node-9 is a member:\n%s", members())
	}
	// A regulator registers it (another organisation's node); its next join
	// attempt is admitted and it catches up.
	if out, errOut, code := run(t, bin.cli, "--node", c.addrs[1], "registry", "add-node", "--key", c.key("export-regulator"),
		"--name", "node-9", "--participant", "dc-virginia", "--verifier-key", stranger+".pub", "--reason", "test"); code != 0 || !acceptedRE.MatchString(out) {
		t.Fatalf("registry add-node: exit %d\n%s%s", code, out, errOut)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(members(), "node-9 "+lis) {
		if time.Now().After(deadline) {
			t.Fatalf("node-9 was not admitted:\n%s\n%s", members(), d.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.addrs = append(c.addrs, lis)
	c.waitConverged(size+1, 1, 2, 3, 4)
}

// TestClusterLeaderKill: under a steady write load through all nodes, the
// leader is killed with SIGKILL; a new leader is elected within seconds;
// every acknowledged append is on both survivors; the killed node restarts,
// catches up, and all three sign the same checkpoint.
func TestClusterLeaderKill(t *testing.T) {
	c := startCluster(t, []int{1, 2, 3})
	leader := c.waitLeader(1, 2, 3)
	var mu sync.Mutex
	var acked []string
	alive := map[int]bool{1: true, 2: true, 3: true}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (w+k)%3 + 1
				mu.Lock()
				ok := alive[i]
				mu.Unlock()
				if !ok {
					continue
				}
				serial := fmt.Sprintf("GPU-L%d-%d", w, k)
				if code, out := c.manufacture(i, serial); code == 0 && acceptedRE.MatchString(out) {
					mu.Lock()
					acked = append(acked, serial)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	mu.Lock()
	alive[leader] = false
	mu.Unlock()
	killed := time.Now()
	c.kill9(leader)
	var survivors []int
	for i := 1; i <= 3; i++ {
		if i != leader {
			survivors = append(survivors, i)
		}
	}
	next := c.waitLeader(survivors...)
	elected := time.Since(killed)
	t.Logf("node-%d killed; node-%d leads after %v", leader, next, elected.Round(time.Millisecond))
	if elected > 15*time.Second {
		t.Errorf("a new leader took %v", elected)
	}
	// Writes go on under the new leader: for 2 s, and until at least 20 in
	// all were acknowledged (a loaded machine runs the CLI slowly).
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	for deadline, atLeast := time.Now().Add(time.Minute), time.Now().Add(2*time.Second); ; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if (n >= 20 && n > before && time.Now().After(atLeast)) || time.Now().After(deadline) {
			break
		}
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 20 || len(acked) == before {
		t.Fatalf("only %d appends acknowledged (%d by the new leader's election)", len(acked), before)
	}
	size := c.waitConverged(uint64(len(acked)), survivors...)
	for _, i := range survivors {
		lc := c.conn(i)
		for _, s := range acked {
			if _, err := lc.GetSerial(context.Background(), &pb.GetSerialRequest{Serial: s}); err != nil {
				t.Fatalf("acknowledged %s is not on node-%d: %v", s, i, err)
			}
		}
	}
	t.Logf("%d appends acknowledged; log size %d on the survivors", len(acked), size)
	c.start(leader)
	c.waitConverged(size, 1, 2, 3)
	if a, b, d := c.cosigned(1), c.cosigned(2), c.cosigned(3); a != b || b != d {
		t.Fatalf("checkpoints differ after the restart:\n%s--\n%s--\n%s", a, b, d)
	}
}

// TestClusterSnapshotCatchUp: a follower is stopped while 10,000 entries
// are written in 100 raft commands; the leader snapshots and compacts its
// log meanwhile, so the follower catches up from a snapshot (badger backup)
// and then has the same checkpoint as the others.
func TestClusterSnapshotCatchUp(t *testing.T) {
	c := startCluster(t, []int{1, 2, 3}, "--snapshot-interval", "200ms", "--snapshot-threshold", "8", "--trailing-logs", "4")
	leader := c.waitLeader(1, 2, 3)
	follower := leader%3 + 1
	c.stop(follower)
	const n = 10_000
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"serial":"GPU-S-%05d","type":"EVENT_TYPE_MANUFACTURED","actor":"acme-gpu","model":"H100","occurredAt":"2026-03-01T09:00:00Z"}`, i))
	}
	file := filepath.Join(t.TempDir(), "events.jsonl")
	os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	out, errOut, code := run(t, bin.cli, "--node", c.addrs[leader-1], "import", file, "--key", c.key("acme-gpu"), "--batch", "100", "-q")
	if code != 0 || !strings.Contains(out, "10000 accepted") {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	var live []int
	for i := 1; i <= 3; i++ {
		if i != follower {
			live = append(live, i)
		}
	}
	size := c.waitConverged(n, live...)
	// Wait for the leader to snapshot (and compact) past the follower.
	time.Sleep(time.Second)
	d := c.start(follower, "--log-level", "info")
	defer func() {
		if t.Failed() {
			t.Logf("node-%d's log:\n%s", follower, d.out.String())
		}
	}()
	c.waitConverged(size, 1, 2, 3)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.out.String(), "installed a snapshot"); {
		if time.Now().After(deadline) {
			t.Fatalf("node-%d caught up without installing a snapshot", follower)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a, b := c.cosigned(follower), c.cosigned(leader); a != b {
		t.Fatalf("checkpoints differ:\n%s--\n%s", a, b)
	}
}

// TestClusterTamperedFollower: a follower's store is altered while it is
// stopped (a serial's head rewritten deep in the log, where the start-up check
// does not look). When the next event of that serial arrives, the follower
// judges it otherwise than the leader (a stale head): it stops applying and
// refuses to serve, saying why, while the others go on.
func TestClusterTamperedFollower(t *testing.T) {
	c, leader, follower, d := tamperedFollower(t, "GPU-T", 80, func(txn *badger.Txn) {
		key := []byte("sGPU-T-00")
		v := value(t, txn, key)
		v[strings.Index(string(v), "\x2a\x20")+2] ^= 0xff // head_hash's first byte
		txn.Set(key, v)
	})
	out, errOut, code := run(t, bin.cli, "--node", c.addrs[leader-1], "submit", "ship", "--key", c.key("acme-gpu"),
		"--serial", "GPU-T-00", "--to", "us-dist", "--destination", "US")
	if code != 0 {
		t.Fatalf("ship: exit %d\n%s%s", code, out, errOut)
	}
	c.manufacture(leader, "GPU-T-after") // the next command carries the leader's state
	want := "stopped applying instead of diverging"
	c.waitAlarm(follower, d, want)
	refusesToServe(t, d, want)
	if code, out := c.manufacture(leader, "GPU-T-later"); code != 0 {
		t.Fatalf("the others stopped too: %s", out)
	}
}

// TestClusterTamperedMap: a follower whose serial map was altered on disk
// (a hash in the map's root tile), with its log untouched, stops applying
// at the next batch that carries the leader's state: followers compare the
// map root with the leader's like the log root.
func TestClusterTamperedMap(t *testing.T) {
	c, leader, follower, d := tamperedFollower(t, "GPU-TM", 40, nil)
	c.manufacture(leader, "GPU-TM-next")  // applied by all: the follower's map now differs
	c.manufacture(leader, "GPU-TM-after") // carries the leader's state after it
	c.waitAlarm(follower, d, "serial map has root")
	if code, out := c.manufacture(leader, "GPU-TM-later"); code != 0 {
		t.Fatalf("the others stopped too: %s", out)
	}
}

// TestClusterNoQuorum: with two of three nodes stopped, a write fails with
// UNAVAILABLE (after the CLI's retries) and reads are served, marked stale.
func TestClusterNoQuorum(t *testing.T) {
	c := startCluster(t, []int{1, 2, 3})
	if code, out := c.manufacture(1, "GPU-Q-1"); code != 0 {
		t.Fatalf("write: %s", out)
	}
	c.waitConverged(1, 1, 2, 3)
	c.stop(2)
	c.stop(3)
	code, out := c.manufacture(1, "GPU-Q-2")
	if code == 0 || !strings.Contains(out, "Unavailable (NO_LEADER)") || !strings.Contains(out, "retry") {
		t.Fatalf("a write without a majority: exit %d\n%s", code, out)
	}
	// Over gRPC: UNAVAILABLE with ErrorInfo NO_LEADER and a RetryInfo hint.
	ks, err := keys.ReadFile(c.key("acme-gpu"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := os.ReadFile(filepath.Join(c.dir, "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := dsse.SignMessage(dsse.CustodyEventType, &pb.CustodyEvent{LedgerId: consortium.LedgerID(g), Serial: "GPU-Q-3", Type: pb.EventType_EVENT_TYPE_MANUFACTURED,
		Actor: "acme-gpu", Model: "H100", Location: &pb.Location{Country: "TW"}, OccurredAt: timestamppb.Now()}, ks.Signers()...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.conn(1).Append(context.Background(), &pb.AppendRequest{Envelope: env})
	st := status.Convert(err)
	var reason string
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if st.Code() != codes.Unavailable || reason != "NO_LEADER" || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("Append without a majority: %v, reason %q, retry %v", err, reason, retry)
	}
	if st, err := c.status(1); err != nil || !st.Stale || st.Leader != "" {
		t.Fatalf("cluster status of the survivor: %+v %v", st, err)
	}
	out, errOut, code := run(t, bin.cli, "--node", c.addrs[0], "serial", "GPU-Q-1")
	if code != 0 || !strings.Contains(out, "GPU-Q-1") || !strings.Contains(errOut, "warning: stale read") {
		t.Fatalf("a read without a majority: exit %d\n%s%s", code, out, errOut)
	}
	full, errOut, code := run(t, bin.grpcurl, "-cacert", c.ca(), "-v", "-d", `{"serial":"GPU-Q-1"}`, c.addrs[0], "gpuledger.v1.LedgerService/GetSerial")
	if code != 0 || !strings.Contains(full, "gpuledger-stale:") || !strings.Contains(full, "gpuledger-applied-size: 1") {
		t.Fatalf("grpcurl -v GetSerial: exit %d\n%s%s", code, full, errOut)
	}
}

// tamperAt changes the badger store in dir.
func tamperAt(t *testing.T, dir string, change func(txn *badger.Txn)) {
	t.Helper()
	o := badger.DefaultOptions(dir)
	o.Logger = nil
	db, err := badger.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(txn *badger.Txn) error { change(txn); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestClusterReadYourWrites: a submit through a follower right after a write
// through the leader signs on that write, with no flag: the CLI reads the
// head as of the last receipt it saw. The followers apply each batch 200 ms
// late (a hidden test flag), so a read that did not wait would see the old
// head, or no serial. 20 of 20.
func TestClusterReadYourWrites(t *testing.T) {
	c := startCluster(t, []int{1, 2, 3}, "--test-apply-delay", "200ms")
	leader := c.waitLeader(1, 2, 3)
	other := leader%3 + 1
	for k := range 20 {
		sn := fmt.Sprintf("GPU-RYW-%d", k)
		if code, out := c.manufacture(leader, sn); code != 0 {
			t.Fatalf("manufacture %s through the leader: exit %d\n%s", sn, code, out)
		}
		out, errOut, code := run(t, bin.cli, "--node", c.addrs[other-1], "--timeout", "5s", "submit", "ship",
			"--key", c.key("acme-gpu"), "--serial", sn, "--to", "eu-dist")
		if code != 0 || !acceptedRE.MatchString(out) {
			t.Fatalf("ship %s through node-%d right after its manufacture through node-%d (%d of 20 so far): exit %d\n%s%s", sn, other, leader, k, code, out, errOut)
		}
	}
}

// TestClusterScoped: a cluster whose nodes all serve read scope scoped. A
// write through a follower is forwarded to the leader (the follower calls
// as a node, with its node key), a checkpoint cosigned by all three nodes
// is gathered for an auditor, a participant reads its own serial through
// any node and is refused another's, and a participant's direct call to
// the nodes' cosigning method is refused (NODE_ONLY).
func TestClusterScoped(t *testing.T) {
	c := startCluster(t, []int{1, 2, 3}, "--read-scope", "scoped")
	leader := c.waitLeader(1, 2, 3)
	follower := leader%3 + 1
	as := func(i int, id string, args ...string) (string, string, int) {
		return run(t, bin.cli, append([]string{"--node", c.addrs[i-1], "--timeout", "10s", "--identity", c.key(id)}, args...)...)
	}
	for _, sn := range []string{"GPU-SC-1", "GPU-SC-2"} {
		if out, errOut, code := as(follower, "acme-gpu", "submit", "manufacture", "--key", c.key("acme-gpu"), "--serial", sn, "--model", "H100"); code != 0 || !acceptedRE.MatchString(out) {
			t.Fatalf("manufacture %s through follower node-%d: exit %d\n%s%s", sn, follower, code, out, errOut)
		}
	}
	if out, errOut, code := as(follower, "acme-gpu", "submit", "ship", "--key", c.key("acme-gpu"), "--serial", "GPU-SC-1", "--to", "eu-dist"); code != 0 || !acceptedRE.MatchString(out) {
		t.Fatalf("ship through a follower: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := as(follower, "audit-office", "verify", "--min-signers", "3", "GPU-SC-2"); code != 0 || !strings.Contains(out, "OK GPU-SC-2") {
		t.Fatalf("the auditor verifies GPU-SC-2 with a checkpoint of three organisations' nodes: exit %d\n%s%s", code, out, errOut)
	}
	for i := 1; i <= 3; i++ {
		if out, errOut, code := as(i, "eu-dist", "--min-index", "3", "serial", "GPU-SC-1"); code != 0 || !strings.Contains(out, "GPU-SC-1") {
			t.Fatalf("eu-dist reads GPU-SC-1 through node-%d: exit %d\n%s%s", i, code, out, errOut)
		}
		if _, errOut, code := as(i, "eu-dist", "--min-index", "3", "serial", "GPU-SC-2"); code == 0 || !strings.Contains(errOut, "NOT_A_PARTY") {
			t.Fatalf("eu-dist reads GPU-SC-2 through node-%d: exit %d\n%s", i, code, errOut)
		}
	}
	clients := filepath.Join(c.dir, "tls", "clients")
	out, errOut, code := run(t, bin.grpcurl, "-cacert", c.ca(), "-cert", filepath.Join(clients, "eu-dist.pem"), "-key", filepath.Join(clients, "eu-dist.key"),
		"-d", `{"size":"1"}`, c.addrs[0], "gpuledger.v1.ClusterService/CosignCheckpoint")
	if code == 0 || !strings.Contains(out+errOut, "is for the cluster's nodes") {
		t.Fatalf("a participant asks a node to cosign: exit %d\n%s%s", code, out, errOut)
	}
}

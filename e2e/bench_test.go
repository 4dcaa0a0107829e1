package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/client"
	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/internal/workload"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/gpuledger/gpuledger/verify"
	"google.golang.org/protobuf/encoding/protojson"
)

// BenchmarkVerifyAllCLI is the auditor's path end to end: the real CLI's
// verify --all, over loopback gRPC with TLS, against a dev node holding a
// simulated ledger (GPULEDGER_BENCH_SERIALS serials, 25,000 by default:
// about 229,000 entries, the datacentres' attestations signed Ed25519 +
// ML-DSA-65, the rest Ed25519). Each round measures the machine's raw
// parallel verify rate on a sample of the same envelopes before and after
// the run (the ratio's baseline), a full run from scratch, the same
// entries verified in this process without the wire (between baselines of
// their own: in-process-ratio-to-raw, what the CLI's ratio is to be read
// beside), then grows the ledger by about 1% and times the incremental run
// that resumes from the audit store. The ledger is built once, in the
// temporary directory.
//
// Run under taskset with GPULEDGER_BENCH_NODE_CPUS, the node runs on other
// CPUs than the auditor, as an audit of a remote node does: for example
// `GPULEDGER_BENCH_NODE_CPUS=0 taskset -c 1 go test ...` gives the test,
// the raw baseline and the CLI CPU 1 (GOMAXPROCS 1) and the node CPU 0.
func BenchmarkVerifyAllCLI(b *testing.B) {
	serials := 25_000
	if v, err := strconv.Atoi(os.Getenv("GPULEDGER_BENCH_SERIALS")); err == nil && v > 0 {
		serials = v
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("gpuledger-bench-verifyall-cli-%d", serials))
	nodeDir, simDir := filepath.Join(dir, "node"), filepath.Join(dir, "sim")
	if _, err := os.Stat(filepath.Join(dir, "ready")); err != nil {
		os.RemoveAll(dir)
		d := startDevTLS(b, nodeDir)
		b.Logf("building a ledger of %d simulated serials in %s", serials, dir)
		if out, errOut, code := run(b, bin.cli, append(d.cliArgs(), "simulate", "--keys", filepath.Join(nodeDir, "keys"),
			"--serials", fmt.Sprint(serials), "--out", simDir)...); code != 0 {
			b.Fatalf("simulate: exit %d\n%s%s", code, out, errOut)
		}
		d.stop()
		if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	d := startDevTLS(b, nodeDir)
	genesis := filepath.Join(nodeDir, "genesis.json")

	// The baseline's envelopes and keys, from the node.
	envs, byID, hybrid, all := ledgerSample(b, d, genesis)
	rng := rand.New(rand.NewPCG(7, 8))
	sample := make([][]byte, 16_384)
	for i := range sample {
		sample[i] = envs[rng.IntN(len(envs))]
	}
	base := workload.NewBaselineKeys(byID, sample)

	var clientCPU, nodeCPU time.Duration
	verifyAll := func(trust string, extra ...string) (uint64, time.Duration) {
		b.Helper()
		n0 := processCPU(b, d.cmd.Process.Pid)
		cmd := exec.Command(bin.cli, append(d.cliArgs(), append([]string{"verify", "--all", "--genesis", genesis, "--trust-dir", trust, "-o", "json"}, extra...)...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		t0 := time.Now()
		err := cmd.Run()
		el := time.Since(t0)
		var v struct {
			OK      bool   `json:"ok"`
			Entries uint64 `json:"entries"`
		}
		if err != nil || json.Unmarshal(out.Bytes(), &v) != nil || !v.OK {
			b.Fatalf("verify --all %v: %v\n%s%s", extra, err, out.String(), errOut.String())
		}
		clientCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		nodeCPU = processCPU(b, d.cmd.Process.Pid) - n0
		return v.Entries, el
	}
	var full, inc, fullClient, fullNode time.Duration
	var entries, grown uint64
	var raw, inproc, inprocRaw float64
	seed := uint64(time.Now().UnixNano()%1_000_000_000) + 2
	for b.Loop() {
		trust := b.TempDir()
		r1 := float64(len(sample)) / base.Run().Seconds()
		entries, full = verifyAll(trust, "--from-scratch")
		fullClient, fullNode = clientCPU, nodeCPU
		r2 := float64(len(sample)) / base.Run().Seconds()
		raw = (r1 + r2) / 2
		inproc = float64(len(all)) / verifyInProcess(b, genesis, all).Seconds()
		r3 := float64(len(sample)) / base.Run().Seconds()
		inprocRaw = (r2 + r3) / 2
		if out, errOut, code := run(b, bin.cli, append(d.cliArgs(), "simulate", "--keys", filepath.Join(nodeDir, "keys"),
			"--serials", fmt.Sprint(max(serials/100, 1)), "--seed", fmt.Sprint(seed), "--out", simDir)...); code != 0 {
			b.Fatalf("simulate the growth: exit %d\n%s%s", code, out, errOut)
		}
		seed++
		grown, inc = verifyAll(trust)
	}
	rate := float64(entries) / full.Seconds()
	b.ReportMetric(float64(entries), "entries")
	b.ReportMetric(hybrid, "hybrid-share")
	b.ReportMetric(rate, "cli-entries/s")
	b.ReportMetric(raw, "raw-verify/s")
	b.ReportMetric(rate/raw, "ratio-to-raw")
	b.ReportMetric(inproc/inprocRaw, "in-process-ratio-to-raw")
	b.ReportMetric(float64(grown), "grown-entries")
	b.ReportMetric(full.Seconds(), "full-s")
	b.ReportMetric(inc.Seconds(), "incremental-s")
	b.ReportMetric(inc.Seconds()/full.Seconds(), "incremental-share")
	// Where the cores went in the full run: the CLI's CPU, the node's, and
	// the share of the CLI's that the raw signature work of the same
	// entries accounts for (2 cores' worth of the raw rate).
	b.ReportMetric(fullClient.Seconds(), "cli-cpu-s")
	b.ReportMetric(fullNode.Seconds(), "node-cpu-s")
	sigCPU := float64(entries) / raw * float64(runtime.GOMAXPROCS(0))
	b.ReportMetric(sigCPU/fullClient.Seconds(), "cli-cpu-in-signatures")
}

// verifyInProcess verifies entries as verify --all does, in this process
// and without the wire (verify.All: the stream's checkers and sequencer,
// and the map rebuilt in an audit store in memory). It returns the time
// taken.
func verifyInProcess(b *testing.B, genesis string, entries []*pb.Entry) time.Duration {
	b.Helper()
	gb, err := os.ReadFile(genesis)
	if err != nil {
		b.Fatal(err)
	}
	v, err := verify.New(gb)
	if err != nil {
		b.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(200)) // as the CLI runs
	t0 := time.Now()
	i := 0
	rep, err := v.All(context.Background(), func() (*pb.Entry, error) {
		if i == len(entries) {
			return nil, nil
		}
		i++
		return entries[i-1], nil
	}, nil)
	el := time.Since(t0)
	if err != nil || !rep.OK() || rep.MapRoot == nil {
		b.Fatalf("in process: %+v, %v", rep, err)
	}
	return el
}

// processCPU is a process's user and system CPU time so far, from /proc.
func processCPU(b *testing.B, pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stime) * time.Second / 100 // clock ticks (USER_HZ, 100 on Linux)
}

// ledgerSample streams the node's log and returns its custody-event
// envelopes, every key its registry ever held (genesis and registry
// changes) by id, the share of the envelopes signed with ML-DSA-65 too, and
// every entry as streamed (for the in-process verify).
func ledgerSample(b *testing.B, d *devNode, genesis string) ([][]byte, map[string]*pb.PublicKey, float64, []*pb.Entry) {
	b.Helper()
	g := new(pb.Genesis)
	gb, err := os.ReadFile(genesis)
	if err != nil || protojson.Unmarshal(gb, g) != nil {
		b.Fatalf("genesis: %v", err)
	}
	byID := map[string]*pb.PublicKey{}
	addKeys := func(ks []*pb.PublicKey) {
		for _, k := range ks {
			byID[k.GetKeyId()] = k
		}
	}
	for _, p := range g.GetParticipants() {
		addKeys(p.GetKeys())
	}
	conn, err := client.Dial(d.addr, client.Options{CACertFile: d.ca})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	st, err := gpuledgerv1grpc.NewLedgerServiceClient(conn).StreamEntries(context.Background(), &pb.StreamEntriesRequest{EnvelopesOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	var envs [][]byte
	var all []*pb.Entry
	var hybrid int
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, m.GetEntry())
		env, rej := ledger.DecodeEnvelope(m.GetEntry().GetEnvelope())
		if rej != nil {
			b.Fatal(rej)
		}
		ch := new(pb.RegistryChange)
		if env.GetPayloadType() == dsse.RegistryChangeType {
			if err := ledger.UnmarshalPayload(env, ch); err != nil {
				b.Fatal(err)
			}
			addKeys(ch.GetAddParticipant().GetKeys())
			if k := ch.GetAddKey().GetKey(); k != nil {
				addKeys([]*pb.PublicKey{k})
			}
			continue
		}
		if len(env.GetSignatures()) > 1 {
			hybrid++
		}
		envs = append(envs, m.GetEntry().GetEnvelope())
	}
	return envs, byID, float64(hybrid) / float64(len(envs)), all
}

// Package e2e drives the real gpuledgerd and gpuledger binaries and the real
// grpcurl binary against a development node on 127.0.0.1.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/verify"
)

var bin struct{ daemon, cli, grpcurl string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gpuledger-e2e-bin")
	if err != nil {
		panic(err)
	}
	// The CLI's trust store (last verified checkpoints) lives in the test's
	// temporary directory, never the user's.
	os.Setenv("GPULEDGER_TRUST_DIR", filepath.Join(dir, "trust"))
	code := func() int {
		defer os.RemoveAll(dir)
		build := func(args ...string) {
			cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, args...)...)
			cmd.Dir = ".."
			if out, err := cmd.CombinedOutput(); err != nil {
				panic(fmt.Sprintf("go build %v: %v\n%s", args, err, out))
			}
		}
		build("./cmd/gpuledgerd", "./cmd/gpuledger")
		bin.daemon, bin.cli = filepath.Join(dir, "gpuledgerd"), filepath.Join(dir, "gpuledger")
		// grpcurl: the Makefile passes the one it built; otherwise build it
		// from the pinned tools module.
		if bin.grpcurl = os.Getenv("GPULEDGER_GRPCURL"); bin.grpcurl == "" {
			build("-modfile=tools/go.mod", "github.com/fullstorydev/grpcurl/cmd/grpcurl")
			bin.grpcurl = filepath.Join(dir, "grpcurl")
		}
		return m.Run()
	}()
	os.Exit(code)
}

// devNode is a running "gpuledgerd dev".
type devNode struct {
	t    testing.TB
	dir  string
	addr string
	cmd  *exec.Cmd
	out  *syncBuffer
	ca   string // the CA of a node that serves TLS
}

// syncBuffer collects a daemon's log while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var addrRE = regexp.MustCompile(`serving on (127\.0\.0\.1:\d+)`)

func startDev(t *testing.T, dir string) *devNode {
	t.Helper()
	return startDaemon(t, dir, "dev", "--data", dir)
}

// startDevTLS starts "gpuledgerd dev" as it starts by default: serving TLS
// with its development CA (DIR/tls); extra flags follow.
func startDevTLS(t testing.TB, dir string, extra ...string) *devNode {
	t.Helper()
	d := startDaemon(t, dir, append([]string{"dev", "--data", dir,
		"--tls-cert", filepath.Join(dir, "tls", "node.pem"), "--tls-key", filepath.Join(dir, "tls", "node.key")}, extra...)...)
	d.ca = filepath.Join(dir, "tls", "ca.pem")
	return d
}

// startDaemon runs gpuledgerd with args on a free loopback port and waits
// until it serves.
func startDaemon(t testing.TB, dir string, args ...string) *devNode {
	t.Helper()
	return startDaemonLimited(t, dir, 0, args...)
}

// startDaemonLimited is startDaemon with the open-file limit (ulimit -n) set
// to nofile; 0 leaves it as it is.
func startDaemonLimited(t testing.TB, dir string, nofile int, args ...string) *devNode {
	t.Helper()
	for _, f := range [][2]string{{"--listen", "127.0.0.1:0"}, {"--log-level", "warn"}} {
		if !slices.Contains(args, f[0]) {
			args = append(args, f[0], f[1])
		}
	}
	if args[0] == "dev" && !slices.Contains(args, "--tls-cert") {
		// Plaintext on loopback, as the tests that read the wire need;
		// startDevTLS serves TLS, dev's default.
		args = append(args, "--plaintext")
	}
	cmd := exec.Command(bin.daemon, args...)
	if nofile > 0 {
		cmd = exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), bin.daemon}, args...)...)
	}
	if cpus := os.Getenv("GPULEDGER_BENCH_NODE_CPUS"); cpus != "" {
		// Benchmarks: the node on these CPUs (taskset execs it, so the pid
		// is the node's), the test and the CLI on those the test runs on.
		cmd = exec.Command("taskset", append([]string{"-c", cpus}, cmd.Args...)...)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := new(syncBuffer)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &devNode{t: t, dir: dir, cmd: cmd, out: logs}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	// Notice a daemon that exits instead of serving (a zombie is reaped
	// only by Wait, so read /proc for its state).
	exited, started := make(chan struct{}), make(chan struct{})
	defer close(started)
	go func() {
		for {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
			if err != nil || strings.Contains(string(stat), ") Z ") {
				close(exited)
				return
			}
			select {
			case <-started:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	select {
	case d.addr = <-found:
	case <-exited:
		t.Fatalf("gpuledgerd %v exited; its log:\n%s", args, logs.String())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("gpuledgerd %v did not start; its log:\n%s", args, logs.String())
	}
	t.Cleanup(func() { d.stop() })
	return d
}

// stop sends SIGTERM and waits for a clean exit.
func (d *devNode) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			d.t.Errorf("gpuledgerd exited with %v; log:\n%s", err, d.out.String())
		}
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		d.t.Errorf("gpuledgerd did not stop on SIGTERM")
	}
	d.cmd = nil
}

// run runs a binary and returns stdout, stderr and its exit code.
func run(t testing.TB, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), errOut.String(), code
}

func (d *devNode) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, bin.cli, append(d.cliArgs(), args...)...)
	if code != 0 {
		t.Fatalf("gpuledger %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// cliArgs are the CLI's flags to reach d: its address and, for a TLS node,
// its CA.
func (d *devNode) cliArgs() []string {
	if d.ca != "" {
		return []string{"--node", d.addr, "--cacert", d.ca}
	}
	return []string{"--node", d.addr}
}

// grpcurl runs "grpcurl -plaintext [-d data] ADDR args..." (-cacert CA for
// a node that serves TLS).
func (d *devNode) grpcurl(t *testing.T, data string, args ...string) string {
	t.Helper()
	full := []string{"-plaintext"}
	if d.ca != "" {
		full = []string{"-cacert", d.ca}
	}
	if data != "" {
		full = append(full, "-d", data)
	}
	full = append(append(full, d.addr), args...)
	out, errOut, code := run(t, bin.grpcurl, full...)
	if code != 0 {
		t.Fatalf("grpcurl %v: exit %d\n%s%s", full, code, out, errOut)
	}
	return out
}

func (d *devNode) key(id string) string { return filepath.Join(d.dir, "keys", id+".key") }

// ledgerID is the id of the dev node's ledger: the SHA-256 of its genesis.
func (d *devNode) ledgerID(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(d.dir, "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	return consortium.LedgerID(b)
}

func TestLifeOfAGPU(t *testing.T) {
	d := startDev(t, t.TempDir())
	const sn = "GPU-E2E-0001"
	// The README's walk-through, step by step.
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", sn, "--model", "H100-SXM5-80GB", "--eccn", "3A090.a", "--at", "2026-11-02T08:00:00Z")
	d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", sn, "--to", "eu-dist", "--reference", "AWB-1", "--at", "2026-11-02T12:00:00Z")
	d.cli(t, "submit", "receive", "--key", d.key("eu-dist"), "--serial", sn, "--to", "acme-gpu", "--at", "2026-11-04T09:00:00Z")
	d.cli(t, "submit", "ship", "--key", d.key("eu-dist"), "--serial", sn, "--to", "dc-frankfurt", "--at", "2026-11-05T10:00:00Z")
	d.cli(t, "submit", "receive", "--key", d.key("dc-frankfurt"), "--serial", sn, "--at", "2026-11-06T15:00:00Z")
	d.cli(t, "submit", "install", "--key", d.key("dc-frankfurt"), "--serial", sn, "--site", "fra-dc1", "--at", "2026-11-07T09:00:00Z")
	receipt := d.cli(t, "submit", "attest", "--key", d.key("dc-frankfurt"), "--serial", sn, "-o", "json")
	var r struct {
		Index      string `json:"index"`
		Checkpoint struct {
			Note string `json:"note"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(receipt), &r); err != nil || r.Index != "6" || !strings.Contains(r.Checkpoint.Note, "gpuledger/") {
		t.Fatalf("receipt -o json = %s (%v)", receipt, err)
	}

	// The serial through the CLI and through grpcurl.
	if out := d.cli(t, "serial", sn); !strings.Contains(out, "INSTALLED") || !strings.Contains(out, "dc-frankfurt") {
		t.Fatalf("gpuledger serial:\n%s", out)
	}
	var st struct {
		Serial struct {
			State      string `json:"state"`
			Custodian  string `json:"custodian"`
			EventCount string `json:"eventCount"`
		} `json:"serial"`
	}
	if err := json.Unmarshal([]byte(d.grpcurl(t, `{"serial":"`+sn+`"}`, "gpuledger.v1.LedgerService/GetSerial")), &st); err != nil ||
		st.Serial.State != "CUSTODY_STATE_INSTALLED" || st.Serial.Custodian != "dc-frankfurt" || st.Serial.EventCount != "7" {
		t.Fatalf("grpcurl GetSerial = %+v, %v", st, err)
	}
	events := d.grpcurl(t, `{"serial":"`+sn+`","page_size":3}`, "gpuledger.v1.LedgerService/ListSerialEvents")
	if !strings.Contains(events, "EVENT_TYPE_MANUFACTURED") || !strings.Contains(events, "nextPageToken") {
		t.Fatalf("grpcurl ListSerialEvents:\n%s", events)
	}
	cp := d.grpcurl(t, "", "gpuledger.v1.AuditService/GetCheckpoint")
	if !strings.Contains(cp, `"size": "7"`) {
		t.Fatalf("grpcurl GetCheckpoint:\n%s", cp)
	}

	// A clean life: no step was flagged.
	if out := d.cli(t, "history", sn); strings.Contains(out, "IMPOSSIBLE_TRAVEL") || strings.Contains(out, "MISMATCH") {
		t.Fatalf("a clean life was flagged:\n%s", out)
	}
	// Client-side verification trusts only the genesis.
	if out := d.cli(t, "verify", "--genesis", filepath.Join(d.dir, "genesis.json"), sn); !strings.HasPrefix(out, "OK "+sn+": chain intact; 7 entries") {
		t.Fatalf("gpuledger verify:\n%s", out)
	}
	// A non-custodian is refused, with a message that says why.
	out, errOut, code := run(t, bin.cli, "--node", d.addr, "submit", "destroy", "--key", d.key("us-dist"), "--serial", sn)
	if code != 1 || !strings.Contains(errOut, "PermissionDenied (NOT_CUSTODIAN)") {
		t.Fatalf("destroy by a non-custodian: exit %d\n%s%s", code, out, errOut)
	}

	// Restart: every entry and the root unchanged.
	history := d.cli(t, "history", sn, "-o", "json")
	note := d.cli(t, "checkpoint")
	d.stop()
	d = startDev(t, d.dir)
	if got := d.cli(t, "checkpoint"); got != note {
		t.Fatalf("checkpoint after restart:\n%s\nwant\n%s", got, note)
	}
	if got := d.cli(t, "history", sn, "-o", "json"); got != history {
		t.Fatal("history changed across a restart")
	}
	d.cli(t, "submit", "attest", "--key", d.key("dc-frankfurt"), "--serial", sn)
	if out := d.cli(t, "verify", "--genesis", filepath.Join(d.dir, "genesis.json"), sn); !strings.HasPrefix(out, "OK "+sn+": chain intact; 8 entries") {
		t.Fatalf("gpuledger verify after restart:\n%s", out)
	}
}

func TestGrpcurlDiscovery(t *testing.T) {
	d := startDev(t, t.TempDir())
	list := d.grpcurl(t, "", "list")
	for _, svc := range []string{"gpuledger.v1.LedgerService", "gpuledger.v1.AuditService", "gpuledger.v1.RegistryService",
		"gpuledger.v1.ClusterService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(list, svc+"\n") {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, list)
		}
	}
	for what, want := range map[string]string{
		"gpuledger.v1.LedgerService":              "Append submits one signed envelope",
		"gpuledger.v1.CustodyEvent":               "The entry hash of the serial's current head",
		"gpuledger.v1.AuditService.GetCheckpoint": "latest signed checkpoint",
	} {
		if out := d.grpcurl(t, "", "describe", what); !strings.Contains(out, want) {
			t.Errorf("grpcurl describe %s lacks %q:\n%s", what, want, out)
		}
	}
	if out := d.grpcurl(t, "", "grpc.health.v1.Health/Check"); !strings.Contains(out, "SERVING") {
		t.Errorf("health check:\n%s", out)
	}
	if out := d.grpcurl(t, "", "gpuledger.v1.RegistryService/ListParticipants"); !strings.Contains(out, "export-regulator") {
		t.Errorf("ListParticipants:\n%s", out)
	}
}

func TestImport(t *testing.T) {
	d := startDev(t, t.TempDir())
	var lines []string
	for i := range 20 {
		s := fmt.Sprintf("GPU-IMP-%02d", i)
		lines = append(lines,
			`{"serial":"`+s+`","type":"EVENT_TYPE_MANUFACTURED","actor":"acme-gpu","model":"H100","occurredAt":"2026-03-01T09:00:00Z"}`,
			`{"serial":"`+s+`","type":"EVENT_TYPE_SHIPPED","actor":"acme-gpu","counterparty":"us-dist","occurredAt":"2026-03-02T09:00:00Z"}`,
			`{"serial":"`+s+`","type":"EVENT_TYPE_RECEIVED","actor":"us-dist","occurredAt":"2026-03-05T09:00:00Z"}`)
	}
	lines = append(lines, `{"serial":"GPU-IMP-00","type":"EVENT_TYPE_RECEIVED","actor":"eu-dist","occurredAt":"2026-03-06T09:00:00Z"}`)
	file := filepath.Join(t.TempDir(), "events.jsonl")
	os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	out := d.cli(t, "import", file, "--keys", filepath.Join(d.dir, "keys"), "--batch", "7", "-q")
	if !strings.Contains(out, "61 accepted (1 flagged), 0 already present, 0 rejected") {
		t.Fatalf("import:\n%s", out)
	}
	// Importing the same file again: every envelope is byte-identical.
	if out := d.cli(t, "import", file, "--keys", filepath.Join(d.dir, "keys"), "-q"); !strings.Contains(out, "0 accepted (0 flagged), 61 already present") {
		t.Fatalf("second import:\n%s", out)
	}
}

// TestOwnConsortium builds a consortium from nothing with the CLI (keys, a
// node key, a genesis) and serves it with gpuledgerd serve.
func TestOwnConsortium(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	cli := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(t, bin.cli, args...)
		if code != 0 {
			t.Fatalf("gpuledger %v: exit %d\n%s%s", args, code, out, errOut)
		}
		return out
	}
	cli("keygen", "--participant", "fab-one", "--out", p("fab-one.key"))
	cli("keygen", "--participant", "authority", "--scheme", "hybrid", "--out", p("authority.key"))
	cli("nodekey", "--name", "node-a", "--out", p("node-a.key"))
	if st, _ := os.Stat(p("node-a.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("node key mode %v", st.Mode().Perm())
	}
	cli("genesis", "create", "--out", p("genesis.json"), "--name", "test-consortium")
	cli("genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "fab-one", "--role", "manufacturer",
		"--country", "TW", "--site", "fab-1:TW:24.8,120.97", "--pub", p("fab-one.key.pub"))
	cli("genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "authority", "--role", "regulator",
		"--country", "US", "--pub", p("authority.key.pub"), "--hybrid")
	cli("genesis", "add-node", "--genesis", p("genesis.json"), "--name", "node-a", "--participant", "authority", "--verifier-key", p("node-a.key.pub"))
	if out := cli("genesis", "check", p("genesis.json")); !strings.Contains(out, "2 participants, 1 node;") {
		t.Fatalf("genesis check: %s", out)
	}
	// A bad role is refused with a message that says what to use.
	if _, errOut, code := run(t, bin.cli, "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "x-co", "--role", "smuggler", "--country", "US"); code == 0 || !strings.Contains(errOut, "want manufacturer, distributor") {
		t.Fatalf("bad role: exit %d, %s", code, errOut)
	}
	d := startDaemon(t, dir, "serve", "--data", p("data"), "--genesis", p("genesis.json"), "--node-key", p("node-a.key"))
	d.cli(t, "submit", "manufacture", "--key", p("fab-one.key"), "--serial", "OWN-1", "--model", "B200")
	if out := d.cli(t, "verify", "--genesis", p("genesis.json"), "OWN-1"); !strings.HasPrefix(out, "OK OWN-1: chain intact; 1 entry verified against checkpoint size 1 signed by [node-a]") {
		t.Fatalf("verify:\n%s", out)
	}
	// A key readable by others is refused before anything is sent.
	os.Chmod(p("fab-one.key"), 0o644)
	if _, errOut, code := run(t, bin.cli, "--node", d.addr, "submit", "manufacture", "--key", p("fab-one.key"), "--serial", "OWN-2", "--model", "B200"); code == 0 || !strings.Contains(errOut, "chmod 600") {
		t.Fatalf("world-readable key: exit %d, %s", code, errOut)
	}
}

// TestWatchFindings: grpcurl watches findings while the CLI, another
// process, submits a receipt by the wrong party; the finding arrives.
func TestWatchFindings(t *testing.T) {
	d := startDev(t, t.TempDir())
	// Serials shipped to eu-dist; each receipt by us-dist raises a finding.
	const n = 6
	for i := range n {
		s := fmt.Sprintf("GPU-W%d", i)
		d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", s, "--model", "H100", "--at", "2026-11-02T08:00:00Z")
		d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", s, "--to", "eu-dist", "--at", "2026-11-02T12:00:00Z")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, bin.grpcurl, "-plaintext", "-d", `{"kinds":["FINDING_KIND_RECEIVER_MISMATCH"]}`, d.addr, "gpuledger.v1.AuditService/WatchFindings")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { watch.Process.Kill(); watch.Wait() }()
	got := make(chan string, 1)
	go func() {
		var buf strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			buf.WriteString(sc.Text() + "\n")
			if sc.Text() == "}" {
				got <- buf.String()
				return
			}
		}
	}()
	// The stream opens at its own pace: submit a wrong-party receipt on a
	// fresh serial every second and a half until one reaches grpcurl.
	var out string
	for i := 0; out == ""; i++ {
		if i == n {
			t.Fatal("no finding reached grpcurl WatchFindings")
		}
		d.cli(t, "submit", "receive", "--key", d.key("us-dist"), "--serial", fmt.Sprintf("GPU-W%d", i), "--at", "2026-11-04T09:00:00Z")
		select {
		case out = <-got:
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no finding reached grpcurl WatchFindings")
		}
	}
	if !strings.Contains(out, "FINDING_KIND_RECEIVER_MISMATCH") || !strings.Contains(out, "GPU-W") || !strings.Contains(out, "us-dist") {
		t.Fatalf("grpcurl WatchFindings printed:\n%s", out)
	}
	// The CLI lists it too, and GetSerial shows it as open.
	if out := d.cli(t, "gaps", "--kind", "receiver_mismatch"); !strings.Contains(out, "RECEIVER_MISMATCH") || !strings.Contains(out, "GPU-W0") {
		t.Fatalf("gpuledger gaps:\n%s", out)
	}
	if out := d.grpcurl(t, `{"serial":"GPU-W0"}`, "gpuledger.v1.LedgerService/GetSerial"); !strings.Contains(out, "openFindings") {
		t.Fatalf("GetSerial lacks open findings:\n%s", out)
	}
	if _, errOut, code := run(t, bin.cli, "--node", d.addr, "gaps", "--kind", "smuggling"); code == 0 || !strings.Contains(errOut, "want one of handoff_unconfirmed") {
		t.Fatalf("bad --kind: exit %d %s", code, errOut)
	}
}

// TestSimulateCLI runs gpuledger simulate and simulate --check against a
// development node.
func TestSimulateCLI(t *testing.T) {
	d := startDev(t, t.TempDir())
	out := filepath.Join(t.TempDir(), "sim")
	if got := d.cli(t, "simulate", "--keys", filepath.Join(d.dir, "keys"), "--serials", "300", "--seed", "5", "--out", out); !strings.Contains(got, "simulated 300 serials (15 with planted diversions)") {
		t.Fatalf("simulate:\n%s", got)
	}
	got := d.cli(t, "simulate", "--check", "--out", out)
	if !strings.Contains(got, "clean serials with findings: 0 of 285") || !strings.Contains(got, "IMPOSSIBLE_TRAVEL") {
		t.Fatalf("simulate --check:\n%s", got)
	}
	var js struct {
		OK    bool `json:"ok"`
		Kinds []struct {
			Kind   string  `json:"kind"`
			Recall float64 `json:"recall"`
		} `json:"kinds"`
		CleanSerials int `json:"cleanSerials"`
	}
	if err := json.Unmarshal([]byte(d.cli(t, "simulate", "--check", "--out", out, "-o", "json")), &js); err != nil || !js.OK || js.CleanSerials != 285 || len(js.Kinds) < 10 {
		t.Fatalf("simulate --check -o json: %+v, %v", js, err)
	}
	// A second run with another seed reuses the registered participants' keys.
	d.cli(t, "simulate", "--keys", filepath.Join(d.dir, "keys"), "--serials", "50", "--seed", "6", "--out", out)
	if got := d.cli(t, "simulate", "--check", "--out", out); !strings.Contains(got, "clean serials with findings: 0 of") {
		t.Fatalf("second simulate --check:\n%s", got)
	}
}

// TestForkDetected: a client verifies (and so trusts) a checkpoint; the node
// is then restarted on a store rebuilt with another history. The client's
// next verification fails loudly, whether the new history is shorter or
// longer.
func TestForkDetected(t *testing.T) {
	dir := t.TempDir()
	genesis := filepath.Join(dir, "genesis.json")
	d := startDev(t, dir)
	// submit records a serial's manufacture and n attestations (accepted,
	// and flagged, since the GPU is not installed: history all the same).
	submit := func(d *devNode, serial, reference string, n int) {
		d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", serial, "--model", "H100", "--at", "2026-11-02T08:00:00Z")
		for i := range n {
			d.cli(t, "submit", "attest", "--key", d.key("acme-gpu"), "--serial", serial, "--reference", fmt.Sprintf("%s-%d", reference, i),
				"--at", fmt.Sprintf("2026-11-%02dT09:00:00Z", 3+i))
		}
	}
	submit(d, "GPU-F", "original", 2)
	if out := d.cli(t, "verify", "--genesis", genesis, "GPU-F"); !strings.Contains(out, "first checkpoint of this ledger seen here") {
		t.Fatalf("first verify:\n%s", out)
	}
	submit(d, "GPU-G", "more", 1)
	if out := d.cli(t, "verify", "--genesis", genesis, "GPU-G"); !strings.Contains(out, "extends the one verified before (size 3)") {
		t.Fatalf("second verify:\n%s", out)
	}
	d.stop()

	// The operator rebuilds the store with another history: same genesis,
	// same node key, different entries — first a shorter log, then a longer.
	rebuild := func(serial string, n int) *devNode {
		os.RemoveAll(filepath.Join(dir, "node"))
		d := startDev(t, dir)
		// The operator's own client: a submit through ours would refuse a
		// log shorter than the receipts it has seen.
		trust := os.Getenv("GPULEDGER_TRUST_DIR")
		os.Setenv("GPULEDGER_TRUST_DIR", t.TempDir())
		submit(d, serial, "rewritten", n)
		os.Setenv("GPULEDGER_TRUST_DIR", trust)
		return d
	}
	for _, tc := range []struct {
		serial string
		n      int
		why    string
	}{{"GPU-F", 1, "it is shorter"}, {"GPU-F", 6, "the consistency proof fails"}} {
		d := rebuild(tc.serial, tc.n)
		out, errOut, code := run(t, bin.cli, "--node", d.addr, "verify", "--genesis", genesis, tc.serial)
		if code != 1 || !strings.Contains(out, "FORK") || !strings.Contains(out, tc.why) {
			t.Fatalf("verify against a rewritten history (%d entries): exit %d\n%s%s", 1+tc.n, code, out, errOut)
		}
		if tc.n == 1 { // a log shorter than our receipts: our submit refuses to sign on it
			out, errOut, code := run(t, bin.cli, "--node", d.addr, "submit", "attest", "--key", d.key("acme-gpu"), "--serial", tc.serial)
			if code == 0 || !strings.Contains(errOut, "its history was rolled back") {
				t.Fatalf("submit to a node whose log is shorter than the receipts seen: exit %d\n%s%s", code, out, errOut)
			}
		}
		d.stop()
	}
}

// copyPrivate copies a data directory, keeping key files private (0600) as
// the node requires.
func copyPrivate(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(to, func(p string, e os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".key") {
			os.Chmod(p, 0o600)
		}
		return nil
	})
}

// tamper opens a stopped development node's store with badger directly and
// changes it.
func tamper(t *testing.T, dir string, change func(txn *badger.Txn)) {
	t.Helper()
	tamperAt(t, filepath.Join(dir, "node", "ledger"), change)
}

func entryKey(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'e'}, i) }

// alterMapSnapshot flips the last byte (a hash its inner nodes are
// computed from) of the tiles at depth in the snapshot file of the serial
// map's top levels in a ledger's directory, and makes its checksum good
// again, as a deliberate change would. The format, as wire-format.md gives
// it: "gpuledger-map-top-v1\n", uint64be(log size), the map root (32),
// then (depth, prefix bytes, uint16be(length), tile) per tile, then the
// SHA-256 of all before.
func alterMapSnapshot(t *testing.T, ledgerDir string, depth byte) {
	t.Helper()
	path := filepath.Join(ledgerDir, "serial-map-top")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	for r := b[len("gpuledger-map-top-v1\n")+8+32 : len(b)-32]; len(r) > 0; {
		n := (int(r[0]) + 7) / 8
		size := int(r[1+n])<<8 | int(r[2+n])
		if r[0] == depth {
			r[3+n+size-1] ^= 0xff
			changed++
		}
		r = r[3+n+size:]
	}
	if changed == 0 {
		t.Fatalf("no tile at depth %d in the serial map's snapshot", depth)
	}
	sum := sha256.Sum256(b[:len(b)-32])
	copy(b[len(b)-32:], sum[:])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func value(t *testing.T, txn *badger.Txn, key []byte) []byte {
	it, err := txn.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := it.ValueCopy(nil)
	return v
}

// TestTamper tampers with a real store in four ways, deep in the log and at
// its head. gpuledgerd check names the entry (or serial) every time; a node
// on a store whose head was tampered with refuses to serve it, naming it
// (health NOT_SERVING, the alarm in its cluster status, reads refused); verify
// --all against a node serving a store tampered deep inside names the entry;
// verify SERIAL fails for the affected serial only.
func TestTamper(t *testing.T) {
	base := t.TempDir()
	d := startDev(t, base)
	d.cli(t, "simulate", "--keys", filepath.Join(base, "keys"), "--serials", "40", "--seed", "9", "--out", filepath.Join(base, "sim"))
	genesis := filepath.Join(base, "genesis.json")
	if out := d.cli(t, "verify", "--all", "--genesis", genesis); !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("verify --all on an intact log:\n%s", out)
	}
	var cp struct {
		Checkpoint struct {
			Size string `json:"size"`
		} `json:"checkpoint"`
	}
	json.Unmarshal([]byte(d.cli(t, "checkpoint", "-o", "json")), &cp)
	var size uint64
	fmt.Sscan(cp.Checkpoint.Size, &size)
	serialOf := func(i uint64) string {
		var r struct {
			Entry struct {
				Event struct {
					Serial string `json:"serial"`
				} `json:"event"`
			} `json:"entry"`
		}
		json.Unmarshal([]byte(d.grpcurl(t, fmt.Sprintf(`{"index":%d}`, i), "gpuledger.v1.LedgerService/GetEntry")), &r)
		return r.Entry.Event.Serial
	}
	const mid = 100
	midSerial, headSerial := serialOf(mid), serialOf(size-1)
	var other string
	for i := uint64(0); other == "" || other == midSerial; i += 37 {
		other = serialOf(i)
	}
	if midSerial == "" || headSerial == "" || size < mid+70 {
		t.Fatalf("log of %d entries; serials %q %q", size, midSerial, headSerial)
	}
	d.stop()
	if out, errOut, code := run(t, bin.daemon, "check", "--data", filepath.Join(base, "node")); code != 0 || !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("gpuledgerd check on an intact store: exit %d\n%s%s", code, out, errOut)
	}
	pristine := filepath.Join(t.TempDir(), "pristine")
	copyPrivate(t, base, pristine)

	flip := func(k uint64) func(*badger.Txn) {
		return func(txn *badger.Txn) {
			v := value(t, txn, entryKey(k))
			v[len(v)-40] ^= 1
			txn.Set(entryKey(k), v)
		}
	}
	del := func(k uint64) func(*badger.Txn) { return func(txn *badger.Txn) { txn.Delete(entryKey(k)) } }
	swap := func(k uint64) func(*badger.Txn) {
		return func(txn *badger.Txn) {
			a, b := value(t, txn, entryKey(k)), value(t, txn, entryKey(k+1))
			txn.Set(entryKey(k), b)
			txn.Set(entryKey(k+1), a)
		}
	}
	head := func(serial string) func(*badger.Txn) {
		return func(txn *badger.Txn) {
			key := append([]byte{'s'}, serial...)
			v := value(t, txn, key)
			v[bytes.Index(v, []byte{0x2a, 0x20})+2] ^= 0xff // field 5 (head_hash), first byte
			txn.Set(key, v)
		}
	}
	type tcase struct {
		name   string
		change func(*badger.Txn)
		want   string // what gpuledgerd check and the start-up check name
	}
	deep := []tcase{
		{"flipped byte", flip(mid), fmt.Sprintf("entry %d:", mid)},
		{"deleted entry", del(mid), fmt.Sprintf("entry %d: missing", mid)},
		{"swapped entries", swap(mid), fmt.Sprintf("entry %d:", mid)},
		{"rewritten serial head", head(midSerial), "serial " + midSerial},
		// A hash in the snapshot file of the serial map's top levels, in
		// its tiles at depth 4 (not the root's): the log is intact, the map
		// no longer the log's (prepare changes the file).
		{"altered map tile", nil, "serial map"},
	}
	atHead := []tcase{
		{"flipped byte", flip(size - 1), fmt.Sprintf("entry %d:", size-1)},
		{"deleted entry", del(size - 1), fmt.Sprintf("entry %d: missing", size-1)},
		{"swapped entries", swap(size - 2), fmt.Sprintf("entry %d:", size-2)},
		{"rewritten serial head", head(headSerial), "serial " + headSerial},
	}
	prepare := func(t *testing.T, change func(*badger.Txn)) string {
		dir := filepath.Join(t.TempDir(), "copy")
		copyPrivate(t, pristine, dir)
		if change == nil {
			alterMapSnapshot(t, filepath.Join(dir, "node", "ledger"), 4)
		} else {
			tamper(t, dir, change)
		}
		out, errOut, code := run(t, bin.daemon, "check", "--data", filepath.Join(dir, "node"))
		if code != 1 || !strings.Contains(out, "FAILED") {
			t.Fatalf("gpuledgerd check: exit %d\n%s%s", code, out, errOut)
		}
		return dir
	}
	for _, tc := range deep {
		t.Run("deep/"+tc.name, func(t *testing.T) {
			dir := prepare(t, tc.change)
			if out, _, _ := run(t, bin.daemon, "check", "--data", filepath.Join(dir, "node")); !strings.Contains(out, tc.want) {
				t.Fatalf("gpuledgerd check does not name %q:\n%s", tc.want, out)
			}
			if strings.Contains(tc.name, "head") || strings.Contains(tc.name, "map") {
				return // the log itself is intact: verify --all rightly passes
			}
			d := startDev(t, dir)
			trust := t.TempDir()
			out, errOut, code := run(t, bin.cli, "--node", d.addr, "verify", "--all", "--genesis", filepath.Join(dir, "genesis.json"), "--trust-dir", trust)
			if code == 0 || !strings.Contains(out+errOut, fmt.Sprintf("entry %d", mid)) {
				t.Fatalf("verify --all: exit %d, want a failure naming entry %d\n%s%s", code, mid, out, errOut)
			}
			if tc.name != "flipped byte" {
				return
			}
			// verify SERIAL fails for the affected serial only.
			out, _, code = run(t, bin.cli, "--node", d.addr, "verify", "--genesis", filepath.Join(dir, "genesis.json"), "--trust-dir", trust, midSerial)
			if code == 0 || !strings.Contains(out, fmt.Sprintf("entry %d", mid)) {
				t.Fatalf("verify %s (tampered): exit %d\n%s", midSerial, code, out)
			}
			if out, _, code := run(t, bin.cli, "--node", d.addr, "verify", "--genesis", filepath.Join(dir, "genesis.json"), "--trust-dir", trust, other); code != 0 {
				t.Fatalf("verify %s (untouched): exit %d\n%s", other, code, out)
			}
		})
	}
	for _, tc := range atHead {
		t.Run("head/"+tc.name, func(t *testing.T) {
			dir := prepare(t, tc.change)
			d := startDev(t, dir)
			refusesToServe(t, d, tc.want)
		})
	}
}

// refusesToServe checks that a node serves only its alarm, naming want:
// health NOT_SERVING, the alarm in GetClusterStatus, ledger reads refused.
func refusesToServe(t *testing.T, d *devNode, want string) {
	t.Helper()
	if out := d.grpcurl(t, "", "grpc.health.v1.Health/Check"); !strings.Contains(out, "NOT_SERVING") {
		t.Fatalf("health of a node serving a tampered store:\n%s", out)
	}
	var st struct{ Alarm string }
	json.Unmarshal([]byte(d.grpcurl(t, "", "gpuledger.v1.ClusterService/GetClusterStatus")), &st)
	if !strings.Contains(st.Alarm, want) {
		t.Fatalf("the alarm does not name %q: %q", want, st.Alarm)
	}
	out, errOut, code := run(t, bin.cli, "--node", d.addr, "checkpoint")
	if code == 0 || !strings.Contains(errOut, "Unavailable (NODE_ALARM)") || !strings.Contains(errOut, want) {
		t.Fatalf("a read from a node with its alarm raised: exit %d\n%s%s", code, out, errOut)
	}
}

// TestPassport: a serial with 50 events gets a passport through the CLI; it
// verifies offline (the node stopped); a change of any single byte of a
// passport fails, with a message naming what broke.
func TestPassport(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	day0 := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	ts := func(days int) string { return day0.AddDate(0, 0, days).Format(time.RFC3339) }
	add(`{"serial":"GPU-PP","type":"EVENT_TYPE_MANUFACTURED","actor":"acme-gpu","model":"H100","occurredAt":%q}`, ts(0))
	add(`{"serial":"GPU-PP","type":"EVENT_TYPE_SHIPPED","actor":"acme-gpu","counterparty":"eu-dist","occurredAt":%q}`, ts(1))
	add(`{"serial":"GPU-PP","type":"EVENT_TYPE_RECEIVED","actor":"eu-dist","occurredAt":%q}`, ts(3))
	add(`{"serial":"GPU-PP","type":"EVENT_TYPE_SHIPPED","actor":"eu-dist","counterparty":"dc-frankfurt","occurredAt":%q}`, ts(4))
	add(`{"serial":"GPU-PP","type":"EVENT_TYPE_RECEIVED","actor":"dc-frankfurt","occurredAt":%q}`, ts(6))
	add(`{"serial":"GPU-PP","type":"EVENT_TYPE_INSTALLED","actor":"dc-frankfurt","occurredAt":%q}`, ts(7))
	for i := range 44 {
		add(`{"serial":"GPU-PP","type":"EVENT_TYPE_ATTESTED","actor":"dc-frankfurt","occurredAt":%q}`, ts(8+3*i))
	}
	events := filepath.Join(dir, "pp.jsonl")
	os.WriteFile(events, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	d.cli(t, "import", events, "--keys", filepath.Join(dir, "keys"), "-q")
	file := filepath.Join(dir, "GPU-PP.passport")
	if out := d.cli(t, "passport", "GPU-PP", "--file", file); !strings.Contains(out, "50 entries") {
		t.Fatalf("passport:\n%s", out)
	}
	// A short one, for the byte-by-byte sweep.
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "GPU-PS", "--model", "H100", "--at", ts(0))
	d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "GPU-PS", "--to", "eu-dist", "--at", ts(1))
	d.cli(t, "submit", "receive", "--key", d.key("eu-dist"), "--serial", "GPU-PS", "--at", ts(3))
	short := filepath.Join(dir, "GPU-PS.passport")
	d.cli(t, "passport", "GPU-PS", "--file", short)
	d.stop() // offline from here on
	genesis := filepath.Join(dir, "genesis.json")
	start := time.Now()
	out, errOut, code := run(t, bin.cli, "verify", "--passport", file, "--genesis", genesis)
	elapsed := time.Since(start)
	if code != 0 || !strings.HasPrefix(out, "OK passport of GPU-PP: 50 entries verified offline") || !strings.Contains(out, "INSTALLED") {
		t.Fatalf("verify --passport: exit %d\n%s%s", code, out, errOut)
	}
	data, _ := os.ReadFile(file)
	t.Logf("passport of a 50-event serial: %d bytes; offline verify by the CLI in %v", len(data), elapsed)

	// A passport pinned to another ledger's genesis fails.
	other := filepath.Join(t.TempDir(), "other.json")
	g, _ := os.ReadFile(genesis)
	os.WriteFile(other, append(g, '\n'), 0o644)
	if out, _, code := run(t, bin.cli, "verify", "--passport", file, "--genesis", other); code == 0 || !strings.Contains(out, "another ledger") {
		t.Fatalf("verify --passport with another genesis: exit %d %s", code, out)
	}

	// Every single-byte change of the short passport fails. Its genesis line
	// (mostly public keys) is sampled every 16th byte; every other byte is
	// changed in turn.
	data, _ = os.ReadFile(short)
	p, err := verify.ParsePassport(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Passport(p, g, 1); err != nil {
		t.Fatalf("untouched passport: %v", err)
	}
	gStart := bytes.Index(data, []byte("\ngenesis ")) + 1
	gEnd := gStart + bytes.IndexByte(data[gStart:], '\n')
	checked := 0
	for i := range data {
		if i > gStart+9 && i < gEnd && i%16 != 0 {
			continue
		}
		mut := bytes.Clone(data)
		mut[i] ^= 0x01
		checked++
		p, err := verify.ParsePassport(mut)
		if err == nil {
			_, err = verify.Passport(p, nil, 1)
		}
		if err == nil {
			t.Fatalf("a change of byte %d (%q -> %q) still verifies", i, data[i], mut[i])
		}
		if err.Error() == "" {
			t.Fatalf("byte %d: failure without a message", i)
		}
	}
	t.Logf("%d single-byte changes, each refused", checked)
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestErrorMessages: each mistake a new user made on the tour gets a message
// that says what is wrong and what to do, asserted as the user sees it.
func TestErrorMessages(t *testing.T) {
	d := startDev(t, t.TempDir())
	dir := t.TempDir()
	pub := filepath.Join(dir, "someone.key")
	if _, errOut, code := run(t, bin.cli, "keygen", "--participant", "someone", "--out", pub); code != 0 {
		t.Fatal(errOut)
	}
	genesis := filepath.Join(d.dir, "genesis.json")
	node := []string{"--node", d.addr}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"an unknown subcommand", append(node, "submit", "shp", "--key", d.key("acme-gpu")),
			`gpuledger submit has no subcommand "shp"; it has attest, decommission, destroy, install, manufacture, receive, report-lost, ship`},
		{"an unknown registry subcommand", append(node, "registry", "add-participants"),
			`gpuledger registry has no subcommand "add-participants"; it has add-key, add-node, add-participant`},
		{"a missing argument", append(node, "serial"), "gpuledger serial needs SERIAL; usage: gpuledger serial SERIAL"},
		{"too many arguments", append(node, "history", "A", "B"), "gpuledger history takes 1 argument, and got 2 arguments (A B)"},
		{"an event for a serial that does not exist", append(node, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "GPU-0009", "--to", "eu-dist"),
			"NotFound (UNKNOWN_SERIAL): no serial GPU-0009: it has no records, so its first event must be MANUFACTURED"},
		{"a public key file as --key", append(node, "submit", "attest", "--key", pub+".pub", "--serial", "GPU-1"),
			"is a public key file, not a private key file: give the private key file"},
		{"a genesis as --key", append(node, "submit", "attest", "--key", genesis, "--serial", "GPU-1"),
			"genesis.json is a genesis file, not a private key file"},
		{"only --key missing", append(node, "submit", "attest", "--serial", "GPU-1"), "gpuledger: --key is required\n"},
		{"only --serial missing", append(node, "submit", "attest", "--key", d.key("acme-gpu")), "gpuledger: --serial is required\n"},
		{"a node without a port", []string{"--node", "127.0.0.1", "serial", "GPU-1"}, `--node "127.0.0.1": give host:port, for example 127.0.0.1:7600 (a port is required)`},
		{"a node given as a URL", []string{"--node", "http://" + d.addr, "serial", "GPU-1"}, "give host:port (for example 127.0.0.1:7600), not a URL"},
		{"a flag another event takes", append(node, "submit", "receive", "--key", d.key("eu-dist"), "--serial", "GPU-1", "--model", "H100"),
			"unknown flag: --model"},
		{"a network flag on an offline command", []string{"--node", d.addr, "keygen", "--participant", "x-co", "--out", filepath.Join(dir, "x.key")},
			"gpuledger keygen works on files alone and talks to no node: drop --node"},
		{"no node at the address", []string{"--node", "127.0.0.1:1", "serial", "GPU-1"}, "no node answers at 127.0.0.1:1: start one (make run), or give its host:port with --node"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, bin.cli, tc.args...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("gpuledger %s: exit %d\nstdout: %s\nstderr: %s\nwant stderr to say: %s", strings.Join(tc.args, " "), code, out, errOut, tc.want)
			}
		})
	}
	t.Run("check on a running node", func(t *testing.T) {
		_, errOut, code := run(t, bin.daemon, "check", "--data", filepath.Join(d.dir, "node"))
		if code == 0 || !strings.Contains(errOut, "is in use by a running node: stop the node first") {
			t.Fatalf("gpuledgerd check on a running node: exit %d\n%s", code, errOut)
		}
	})
}

// TestVersion: both binaries say which build they are.
func TestVersion(t *testing.T) {
	for _, b := range []string{bin.cli, bin.daemon} {
		out, errOut, code := run(t, b, "--version")
		if code != 0 || !strings.Contains(out, " version ") || !strings.Contains(out, "(commit ") || !strings.Contains(out, "go1.") {
			t.Errorf("%s --version: exit %d\n%s%s", filepath.Base(b), code, out, errOut)
		}
	}
}

// TestImportSampleAndBadLines: the sample file the README imports goes in
// whole and again as duplicates; an actor that is not a participant id is
// refused before it becomes part of a key path; an over-long line is
// reported by its number; an undated line re-imported is explained.
func TestImportSampleAndBadLines(t *testing.T) {
	d := startDev(t, t.TempDir())
	keys := filepath.Join(d.dir, "keys")
	sample := filepath.Join("..", "examples", "events.jsonl")
	if out := d.cli(t, "import", sample, "--keys", keys, "-q"); !strings.Contains(out, "6 accepted (0 flagged), 0 already present, 0 rejected") {
		t.Fatalf("import of the sample:\n%s", out)
	}
	if out := d.cli(t, "import", sample, "--keys", keys, "-q"); !strings.Contains(out, "0 accepted (0 flagged), 6 already present") {
		t.Fatalf("re-import of the sample:\n%s", out)
	}
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"a path in the actor", write("escape.jsonl", `{"serial":"X","type":"EVENT_TYPE_MANUFACTURED","actor":"../../etc/x","model":"H"}`+"\n"),
			`line 1: actor "../../etc/x" is not a participant id`},
		{"a line over 1 MiB", write("long.jsonl", `{"serial":"A","type":"EVENT_TYPE_MANUFACTURED","actor":"acme-gpu","model":"H"}`+"\n"+`{"serial":"`+strings.Repeat("x", 1<<20)+`"}`+"\n"),
			"long.jsonl line 2: longer than 1 MiB; a line holds one event (nothing was submitted)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, bin.cli, "--node", d.addr, "import", tc.file, "--keys", keys, "-q")
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("import: exit %d\n%s%s\nwant: %s", code, out, errOut, tc.want)
			}
		})
	}
	undated := write("undated.jsonl", `{"serial":"GPU-EX-0001","type":"EVENT_TYPE_ATTESTED","actor":"dc-frankfurt","prevEventHash":"`+strings.Repeat("A", 43)+`="}`+"\n")
	_, errOut, _ := run(t, bin.cli, "--node", d.addr, "import", undated, "--keys", keys, "-q")
	if !strings.Contains(errOut, "this line has no occurredAt, so it was dated now and signed anew") {
		t.Fatalf("an undated stale line:\n%s", errOut)
	}
}

// TestGapsOutput: gaps --watch -o json writes JSON Lines as findings arise;
// gaps --limit says when more findings match than it shows.
func TestGapsOutput(t *testing.T) {
	d := startDev(t, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, bin.cli, "--node", d.addr, "gaps", "--watch", "-o", "json")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	watchErr := new(syncBuffer)
	watch.Stderr = watchErr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { watch.Process.Kill(); watch.Wait() }()
	for !strings.Contains(watchErr.String(), "watching") && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	for i, sn := range []string{"W-1", "W-2"} {
		d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", sn, "--model", "H100", "--at", "2026-11-01T00:00:00Z")
		d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", sn, "--to", "eu-dist", "--at", "2026-11-01T01:00:00Z")
		d.cli(t, "submit", "receive", "--key", d.key("us-dist"), "--serial", sn, "--at", fmt.Sprintf("2026-11-0%dT00:00:00Z", i+3))
	}
	sc := bufio.NewScanner(stdout)
	for _, want := range []string{"W-1", "W-2"} {
		if !sc.Scan() {
			t.Fatalf("gaps --watch -o json ended: %v\n%s", sc.Err(), watchErr.String())
		}
		var f finding
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil || f.Serial != want || f.Kind != "FINDING_KIND_RECEIVER_MISMATCH" {
			t.Fatalf("line %q: %v; want one JSON finding of %s per line", sc.Text(), err, want)
		}
	}
	_, errOut, code := run(t, bin.cli, "--node", d.addr, "gaps", "--limit", "1", "--kind", "receiver_mismatch")
	if code != 0 || !strings.Contains(errOut, "1 finding shown; more match (raise --limit") {
		t.Fatalf("gaps --limit 1: exit %d\n%s", code, errOut)
	}
}

// TestJSONOutput: verify (a serial, the whole log, a passport) and import
// print one JSON object with -o json, ok or not.
func TestJSONOutput(t *testing.T) {
	d := startDev(t, t.TempDir())
	genesis := filepath.Join(d.dir, "genesis.json")
	var imp struct {
		Accepted int `json:"accepted"`
		Rejected int `json:"rejected"`
	}
	if err := json.Unmarshal([]byte(d.cli(t, "import", filepath.Join("..", "examples", "events.jsonl"), "--keys", filepath.Join(d.dir, "keys"), "-q", "-o", "json")), &imp); err != nil || imp.Accepted != 6 {
		t.Fatalf("import -o json: %+v, %v", imp, err)
	}
	type verdict struct {
		OK           bool              `json:"ok"`
		Serial       string            `json:"serial"`
		Error        string            `json:"error"`
		Entries      int               `json:"entries"`
		OpenFindings []json.RawMessage `json:"openFindings"`
		Story        []string          `json:"story"`
	}
	var v verdict
	if err := json.Unmarshal([]byte(d.cli(t, "verify", "--genesis", genesis, "GPU-EX-0001", "-o", "json")), &v); err != nil ||
		!v.OK || v.Entries != 6 || len(v.Story) != 6 || len(v.OpenFindings) != 1 { // installed long ago: SILENT
		t.Fatalf("verify -o json: %+v, %v", v, err)
	}
	if out, errOut, code := run(t, bin.cli, "--node", d.addr, "verify", "--genesis", genesis, "NO-SUCH", "-o", "json"); code != 1 || out != "" || !strings.Contains(errOut, "NO-SUCH") {
		t.Fatalf("verify -o json of a serial with no entries: exit %d\n%s%s", code, out, errOut)
	}
	v = verdict{}
	if err := json.Unmarshal([]byte(d.cli(t, "verify", "--genesis", genesis, "--all", "-o", "json")), &v); err != nil || !v.OK || v.Entries != 6 {
		t.Fatalf("verify --all -o json: %+v, %v", v, err)
	}
	pp := filepath.Join(t.TempDir(), "p.passport")
	d.cli(t, "passport", "GPU-EX-0001", "--file", pp)
	v = verdict{}
	if err := json.Unmarshal([]byte(d.cli(t, "verify", "--passport", pp, "--genesis", genesis, "-o", "json")), &v); err != nil || !v.OK || v.Serial != "GPU-EX-0001" {
		t.Fatalf("verify --passport -o json: %+v, %v", v, err)
	}
}

// TestSafeOutput: text a participant wrote is printed with control
// characters escaped, so a model that carries terminal escapes cannot clear
// the screen or print in colour what the ledger never said.
func TestSafeOutput(t *testing.T) {
	d := startDev(t, t.TempDir())
	evil := "H100\x1b[2J\x1b[31mSEIZED BY CUSTOMS\x1b[0m"
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "ESC-1", "--model", evil, "--eccn", "3A090\r")
	out := d.cli(t, "serial", "ESC-1")
	if strings.ContainsAny(out, "\x1b\r") || !strings.Contains(out, `H100\x1b[2J\x1b[31mSEIZED BY CUSTOMS\x1b[0m`) || !strings.Contains(out, `3A090\x0d`) {
		t.Fatalf("gpuledger serial printed a participant's control characters:\n%q", out)
	}
}

// TestOfflineJSON: the offline commands print their result as JSON too.
func TestOfflineJSON(t *testing.T) {
	p := oneNodeGenesis(t)
	var g struct {
		Participants int    `json:"participants"`
		Nodes        int    `json:"nodes"`
		LedgerID     string `json:"ledgerId"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin.cli, "genesis", "check", p("genesis.json"), "-o", "json")), &g); err != nil || g.Participants != 1 || g.Nodes != 1 || len(g.LedgerID) != 64 {
		t.Fatalf("genesis check -o json: %+v, %v", g, err)
	}
	var k struct {
		Participant string `json:"participant"`
		Keys        []struct {
			Scheme string `json:"scheme"`
			KeyID  string `json:"keyId"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin.cli, "keygen", "--participant", "hy-co", "--scheme", "hybrid", "--out", p("hy.key"), "-o", "json")), &k); err != nil ||
		k.Participant != "hy-co" || len(k.Keys) != 2 || k.Keys[1].Scheme != "ML-DSA-65" || len(k.Keys[0].KeyID) != 32 {
		t.Fatalf("keygen -o json: %+v, %v", k, err)
	}
	if _, errOut, code := run(t, bin.cli, "nodekey", "--out", p("n.key")); code == 0 || !strings.Contains(errOut, "--name is required") {
		t.Fatalf("nodekey without --name: exit %d\n%s", code, errOut)
	}
}

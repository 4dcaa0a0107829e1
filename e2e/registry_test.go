package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRegistryCLI is a regulator's day through the real CLI: register a
// participant (after a dry run), give it a second key, revoke the first (its
// signature is then refused), suspend it, and replace the policy, after which
// findings cite the new version.
func TestRegistryCLI(t *testing.T) {
	d := startDev(t, t.TempDir())
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	reg := d.key("export-regulator")
	fail := func(wantCode int, want string, args ...string) {
		t.Helper()
		out, errOut, code := run(t, bin.cli, append([]string{"--node", d.addr}, args...)...)
		if code != wantCode || !strings.Contains(out+errOut, want) {
			t.Fatalf("gpuledger %s: exit %d, want %d with %q\n%s%s", strings.Join(args, " "), code, wantCode, want, out, errOut)
		}
	}
	for _, k := range []string{"sg1.key", "sg2.key"} {
		if out, errOut, code := run(t, bin.cli, "keygen", "--participant", "sg-trader", "--out", p(k)); code != 0 {
			t.Fatalf("keygen: exit %d\n%s%s", code, out, errOut)
		}
	}

	// A dry run changes nothing.
	out, errOut, code := run(t, bin.cli, "--node", d.addr, "registry", "add-participant", "--key", reg, "--id", "sg-trader", "--role", "distributor",
		"--country", "SG", "--site", "sg-wh:SG:1.29,103.85", "--pub", p("sg1.key.pub"), "--dry-run")
	if code != 0 || !strings.Contains(errOut, "export-regulator would add participant sg-trader (DISTRIBUTOR, SG) with 1 key and 1 site") || out != "" {
		t.Fatalf("add-participant --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	fail(1, "NOT_FOUND", "participants", "sg-trader")
	// Refused before anything is sent: an unknown country, a missing key.
	fail(1, `--country "ZZ" is not an ISO 3166-1 alpha-2 country code`, "registry", "add-participant", "--key", reg, "--id", "sg-trader", "--role", "distributor", "--country", "ZZ", "--pub", p("sg1.key.pub"))
	fail(1, "--key is required", "registry", "suspend", "--participant", "sg-trader")
	// Only a regulator may change the registry.
	fail(1, "NOT_REGULATOR", "registry", "suspend", "--key", d.key("eu-dist"), "--participant", "us-dist")

	if out := d.cli(t, "registry", "add-participant", "--key", reg, "--id", "sg-trader", "--role", "distributor",
		"--country", "SG", "--site", "sg-wh:SG:1.29,103.85", "--pub", p("sg1.key.pub"), "--reason", "licence 2026-17"); !strings.Contains(out, "accepted: entry") {
		t.Fatalf("add-participant:\n%s", out)
	}
	if out := d.cli(t, "participants"); !strings.Contains(out, "sg-trader") || !strings.Contains(out, "1 active of 1") {
		t.Fatalf("participants:\n%s", out)
	}
	keyIDs := func() []string {
		var r struct {
			Participant struct {
				Keys []struct {
					KeyID string `json:"keyId"`
				} `json:"keys"`
			} `json:"participant"`
		}
		if err := json.Unmarshal([]byte(d.cli(t, "participants", "sg-trader", "-o", "json")), &r); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, k := range r.Participant.Keys {
			ids = append(ids, k.KeyID)
		}
		return ids
	}
	if out := d.cli(t, "participants", "sg-trader"); !strings.Contains(out, "sg-wh (SG) at 1.290000,103.850000") {
		t.Fatalf("participants sg-trader:\n%s", out)
	}

	// The new participant receives a GPU with its first key.
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "REG-1", "--model", "H100")
	d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "REG-1", "--to", "sg-trader")
	d.cli(t, "submit", "receive", "--key", p("sg1.key"), "--serial", "REG-1")

	// A second key, then the first revoked: its signature is refused.
	d.cli(t, "registry", "add-key", "--key", reg, "--participant", "sg-trader", "--pub", p("sg2.key.pub"))
	ids := keyIDs()
	if len(ids) != 2 {
		t.Fatalf("keys after add-key: %v", ids)
	}
	d.cli(t, "registry", "revoke-key", "--key", reg, "--participant", "sg-trader", "--key-id", ids[0])
	fail(1, "KEY_REVOKED", "submit", "ship", "--key", p("sg1.key"), "--serial", "REG-1", "--to", "eu-dist")
	d.cli(t, "submit", "ship", "--key", p("sg2.key"), "--serial", "REG-1", "--to", "eu-dist")
	if out := d.cli(t, "participants", "sg-trader"); !strings.Contains(out, "revoked at entry") {
		t.Fatalf("participants after revoke-key:\n%s", out)
	}
	if out := d.cli(t, "serials", "--state", "in_transit"); !strings.Contains(out, "REG-1") {
		t.Fatalf("serials --state in_transit:\n%s", out)
	}

	// Suspended: none of its keys may sign.
	d.cli(t, "registry", "suspend", "--key", reg, "--participant", "sg-trader")
	fail(1, "PARTICIPANT_SUSPENDED", "submit", "attest", "--key", p("sg2.key"), "--serial", "REG-1")

	// A new policy: NL becomes RESTRICTED; a shipment there is judged under it.
	cur := d.cli(t, "policy", "-o", "json")
	if err := os.WriteFile(p("old.json"), []byte(cur), 0o644); err != nil {
		t.Fatal(err)
	}
	var pol map[string]any
	if err := json.Unmarshal([]byte(cur), &pol); err != nil {
		t.Fatal(err)
	}
	pol["version"], pol["name"] = "2", "test-2"
	pol["countries"] = append(pol["countries"].([]any), map[string]any{"country": "NL", "class": "COUNTRY_CLASS_RESTRICTED", "note": "test"})
	b, _ := json.Marshal(pol)
	if err := os.WriteFile(p("policy.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	fail(1, "give the new one a greater version", "registry", "set-policy", "--key", reg, "--file", p("old.json"))
	_, errOut, code = run(t, bin.cli, "--node", d.addr, "registry", "set-policy", "--key", reg, "--file", p("policy.json"))
	if code != 0 || !strings.Contains(errOut, "replace policy 1 (default-2026-11) with 2 (test-2)") || !strings.Contains(errOut, "NL none -> RESTRICTED") {
		t.Fatalf("set-policy: exit %d\n%s", code, errOut)
	}
	if out := d.cli(t, "policy"); !strings.Contains(out, "2 (test-2)") || !strings.Contains(out, "NL") {
		t.Fatalf("policy:\n%s", out)
	}
	d.cli(t, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", "REG-2", "--model", "H100")
	d.cli(t, "submit", "ship", "--key", d.key("acme-gpu"), "--serial", "REG-2", "--to", "eu-dist")
	fs := d.gaps(t, "--serial", "REG-2", "--kind", "restricted_destination")
	if len(fs) != 1 {
		t.Fatalf("RESTRICTED_DESTINATION under the new policy: %+v", fs)
	}
	var raw struct {
		Findings []struct {
			PolicyVersion string `json:"policyVersion"`
		} `json:"findings"`
	}
	json.Unmarshal([]byte(d.cli(t, "gaps", "-o", "json", "--serial", "REG-2")), &raw)
	if len(raw.Findings) != 1 || raw.Findings[0].PolicyVersion != "2" {
		t.Fatalf("the finding cites policy %+v, want version 2", raw.Findings)
	}
}

// TestForeignNodeKeyRefused: a node started with a node key its genesis does
// not list refuses to start, naming the key and the nodes it knows, instead
// of serving checkpoints no verifier would accept.
func TestForeignNodeKeyRefused(t *testing.T) {
	p := oneNodeGenesis(t)
	mustRun(t, bin.cli, "nodekey", "--name", "node-b", "--out", p("node-b.key"))
	out, errOut, code := run(t, bin.daemon, "serve", "--data", p("data"), "--genesis", p("genesis.json"), "--node-key", p("node-b.key"), "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "the node key node-b+") || !strings.Contains(errOut, "whose nodes are node-a (authority)") {
		t.Fatalf("serve with a foreign node key: exit %d\n%s%s", code, out, errOut)
	}
	// The genesis's own key serves.
	d := startDaemon(t, p(""), "serve", "--data", p("data"), "--genesis", p("genesis.json"), "--node-key", p("node-a.key"))
	d.cli(t, "checkpoint")
}

// TestGenesisChecks: genesis add-participant and add-node check before they
// write (a duplicate, a node of an unknown participant, a node name that is
// not its key's) and say what they wrote; coordinates keep their precision;
// remove-participant and remove-node undo.
func TestGenesisChecks(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	cli := func(args ...string) string { t.Helper(); return mustRun(t, bin.cli, args...) }
	refused := func(want string, args ...string) {
		t.Helper()
		before, _ := os.ReadFile(p("genesis.json"))
		out, errOut, code := run(t, bin.cli, args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Fatalf("gpuledger %v: exit %d, want a refusal saying %q\n%s%s", args, code, want, out, errOut)
		}
		if after, _ := os.ReadFile(p("genesis.json")); string(after) != string(before) {
			t.Fatalf("gpuledger %v changed the genesis although it refused", args)
		}
	}
	cli("keygen", "--participant", "fab-one", "--out", p("fab-one.key"))
	cli("keygen", "--participant", "authority", "--out", p("authority.key"))
	cli("nodekey", "--name", "node-a", "--out", p("node-a.key"))
	cli("genesis", "create", "--out", p("genesis.json"), "--name", "checks")
	out := cli("genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "fab-one", "--role", "manufacturer",
		"--country", "TW", "--site", "fab-1:TW:0.522654,-120.970001", "--pub", p("fab-one.key.pub"))
	if !strings.Contains(out, "added participant fab-one (MANUFACTURER, TW) with 1 key and 1 site in "+p("genesis.json")+": now 1 participant and 0 nodes") ||
		!strings.Contains(out, "no REGULATOR yet") {
		t.Fatalf("add-participant says:\n%s", out)
	}
	g, _ := os.ReadFile(p("genesis.json"))
	if !strings.Contains(string(g), "522654") || !strings.Contains(string(g), "-120970001") {
		t.Fatalf("coordinates lost precision:\n%s", g)
	}
	refused("already exists", "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "fab-one", "--role", "manufacturer", "--country", "TW", "--pub", p("authority.key.pub"))
	refused("already registered", "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "fab-two", "--role", "manufacturer", "--country", "TW", "--pub", p("fab-one.key.pub"))
	refused("at most 6 decimals", "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "fab-two", "--role", "manufacturer", "--country", "TW", "--site", "x1:TW:1.2345678,2", "--pub", p("authority.key.pub"))
	refused(`participant "authority" is not registered`, "genesis", "add-node", "--genesis", p("genesis.json"), "--name", "node-a", "--participant", "authority", "--verifier-key", p("node-a.key.pub"))
	cli("genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "authority", "--role", "regulator", "--country", "US", "--pub", p("authority.key.pub"))
	refused(`verifier key is named "node-a"`, "genesis", "add-node", "--genesis", p("genesis.json"), "--name", "node-x", "--participant", "authority", "--verifier-key", p("node-a.key.pub"))
	if out := cli("genesis", "add-node", "--genesis", p("genesis.json"), "--name", "node-a", "--participant", "authority", "--verifier-key", p("node-a.key.pub")); !strings.Contains(out, "now 2 participants and 1 node") || strings.Contains(out, "REGULATOR") {
		t.Fatalf("add-node says:\n%s", out)
	}
	refused("operates node node-a", "genesis", "remove-participant", "--genesis", p("genesis.json"), "--id", "authority")
	cli("genesis", "remove-node", "--genesis", p("genesis.json"), "--name", "node-a")
	if out := cli("genesis", "remove-participant", "--genesis", p("genesis.json"), "--id", "fab-one"); !strings.Contains(out, "now 1 participant and 0 nodes") {
		t.Fatalf("remove-participant says:\n%s", out)
	}
}

// mustRun runs a binary and fails the test unless it exits 0; it returns
// stdout.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s%s", filepath.Base(name), strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// oneNodeGenesis makes, with the CLI in a temporary directory, a regulator
// "authority" (authority.key), a node key "node-a" (node-a.key) and a genesis
// (genesis.json) naming both; it returns the directory's path maker.
func oneNodeGenesis(t *testing.T) func(string) string {
	t.Helper()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, bin.cli, "keygen", "--participant", "authority", "--out", p("authority.key"))
	mustRun(t, bin.cli, "nodekey", "--name", "node-a", "--out", p("node-a.key"))
	mustRun(t, bin.cli, "genesis", "create", "--out", p("genesis.json"), "--name", "one-node")
	mustRun(t, bin.cli, "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "authority", "--role", "regulator", "--country", "US", "--pub", p("authority.key.pub"))
	mustRun(t, bin.cli, "genesis", "add-node", "--genesis", p("genesis.json"), "--name", "node-a", "--participant", "authority", "--verifier-key", p("node-a.key.pub"))
	return p
}

// TestRegistryQuorumCLI: a ledger whose genesis asks two regulators to sign
// every registry change, through the real binaries. One regulator alone is
// refused (QUORUM_NOT_MET); a change written by one (--out), cosigned by the
// other and submitted is accepted, and a key added that way without the
// participant's own signature is flagged KEY_ADDED_BY_REGULATOR; neither
// regulator may be suspended (LAST_REGULATOR), while a participant can be
// suspended and its suspension lifted.
func TestRegistryQuorumCLI(t *testing.T) {
	p := oneNodeGenesis(t)
	mustRun(t, bin.cli, "keygen", "--participant", "second", "--out", p("second.key"))
	mustRun(t, bin.cli, "keygen", "--participant", "fab", "--out", p("fab.key"))
	mustRun(t, bin.cli, "keygen", "--participant", "fab", "--out", p("fab2.key"))
	mustRun(t, bin.cli, "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "second", "--role", "regulator", "--country", "DE", "--pub", p("second.key.pub"))
	mustRun(t, bin.cli, "genesis", "add-participant", "--genesis", p("genesis.json"), "--id", "fab", "--role", "manufacturer", "--country", "TW", "--pub", p("fab.key.pub"))
	if _, errOut, code := run(t, bin.cli, "genesis", "set-quorum", "--genesis", p("genesis.json"), "--regulators", "3"); code == 0 || !strings.Contains(errOut, "registry_quorum 3, but only 2 REGULATOR") {
		t.Fatalf("set-quorum 3 with 2 regulators: exit %d\n%s", code, errOut)
	}
	mustRun(t, bin.cli, "genesis", "set-quorum", "--genesis", p("genesis.json"), "--regulators", "2")
	if out := mustRun(t, bin.cli, "genesis", "check", p("genesis.json")); !strings.Contains(out, "registry changes need 2 of 2 regulators") {
		t.Fatalf("genesis check:\n%s", out)
	}
	d := startDaemon(t, t.TempDir(), "serve", "--data", filepath.Join(t.TempDir(), "data"), "--genesis", p("genesis.json"), "--node-key", p("node-a.key"))
	cli := func(args ...string) (string, string, int) {
		return run(t, bin.cli, append([]string{"--node", d.addr}, args...)...)
	}
	if out, errOut, code := cli("registry", "suspend", "--key", p("authority.key"), "--participant", "fab"); code == 0 || !strings.Contains(out+errOut, "QUORUM_NOT_MET") {
		t.Fatalf("one regulator suspends: exit %d\n%s%s", code, out, errOut)
	}
	// Written by one, cosigned by the other, submitted.
	change := p("add-key.jsonl")
	if _, errOut, code := cli("registry", "add-key", "--key", p("authority.key"), "--participant", "fab", "--pub", p("fab2.key.pub"), "--out", change); code != 0 || !strings.Contains(errOut, "registry cosign") {
		t.Fatalf("add-key --out: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := run(t, bin.cli, "registry", "cosign", change, "--key", p("second.key")); code != 0 || !strings.Contains(errOut, "with 2 signatures") {
		t.Fatalf("cosign: exit %d\n%s", code, errOut)
	}
	out, errOut, code := cli("registry", "submit", change)
	if code != 0 || !strings.Contains(out, "accepted: entry") || !strings.Contains(out, "FLAG KEY_ADDED_BY_REGULATOR (HIGH)") {
		t.Fatalf("submit: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ := cli("gaps", "--kind", "KEY_ADDED_BY_REGULATOR"); !strings.Contains(out, "fab") {
		t.Errorf("gaps --kind KEY_ADDED_BY_REGULATOR:\n%s", out)
	}
	// Both at once: a suspension, lifted; no regulator may be suspended.
	both := []string{"--key", p("authority.key"), "--key", p("second.key")}
	for _, args := range [][]string{{"suspend", "--participant", "fab"}, {"unsuspend", "--participant", "fab"}} {
		if out, errOut, code := cli(append(append([]string{"registry"}, args...), both...)...); code != 0 || !strings.Contains(out, "accepted: entry") {
			t.Fatalf("registry %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	if out, errOut, code := cli(append([]string{"registry", "suspend", "--participant", "second"}, both...)...); code == 0 || !strings.Contains(out+errOut, "LAST_REGULATOR") {
		t.Fatalf("suspend a regulator of two with quorum 2: exit %d\n%s%s", code, out, errOut)
	}
}

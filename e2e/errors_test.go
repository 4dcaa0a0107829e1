package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	_ = os.Remove(pub)
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

package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// flood opens n TCP connections to addr, each sending HTTP/2's client
// preface (so the node takes them for gRPC clients), and returns them.
func flood(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(cs), err)
		}
		c.Write([]byte(http2.ClientPreface))
		cs = append(cs, c)
	}
	t.Cleanup(func() { closeAll(cs) })
	return cs
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// goAway reads frames from c until a GOAWAY (or an error) and returns it.
func goAway(c net.Conn) (*http2.GoAwayFrame, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := http2.NewFramer(io.Discard, c)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g, nil
		}
	}
}

// TestConnectionFlood: 400 client connections to a node whose open-file
// limit is 300 no longer take it down. With its default limit (half the
// open files, 150 here) the connections past it are told why in a GOAWAY
// and closed, and the node logs it; with a limit above what the process can
// open, Accept fails with EMFILE, which the node logs and backs off from.
// Either way the node serves again once the flood ends.
func TestConnectionFlood(t *testing.T) {
	t.Run("limit", func(t *testing.T) {
		dir := t.TempDir()
		d := startDaemonLimited(t, dir, 300, "dev", "--data", dir)
		cs := flood(t, d.addr, 400)
		g, err := goAway(cs[len(cs)-1])
		if err != nil {
			t.Fatalf("the 400th connection: %v, want a GOAWAY", err)
		}
		if g.ErrCode != http2.ErrCodeEnhanceYourCalm || !strings.Contains(string(g.DebugData()), "150 client connections open, its limit") {
			t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM naming the limit of 150", g.ErrCode, g.DebugData())
		}
		// Once the refusal server has closed the flood's connections past
		// the limit (two seconds), a client past it is told why.
		var out, errOut string
		code := 0
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if out, errOut, code = run(t, bin.cli, "--node", d.addr, "checkpoint"); strings.Contains(errOut, "ResourceExhausted") {
				break
			}
		}
		if code == 0 || !strings.Contains(errOut, "the node holds 150 client connections, its limit (gpuledgerd --max-connections)") {
			t.Errorf("checkpoint during the flood: exit %d\n%s%s\nwant RESOURCE_EXHAUSTED naming the limit", code, out, errOut)
		}
		closeAll(cs)
		waitCLI(t, d, "checkpoint")
		if !strings.Contains(d.out.String(), "refused a connection: the node holds its limit of client connections") {
			t.Errorf("the node's log does not say it refused connections:\n%s", d.out.String())
		}
	})
	t.Run("emfile", func(t *testing.T) {
		dir := t.TempDir()
		d := startDaemonLimited(t, dir, 300, "dev", "--data", dir, "--max-connections", "1000")
		cs := flood(t, d.addr, 400)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(d.out.String(), "too many open files") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(d.out.String(), "accept failed; retrying") || !strings.Contains(d.out.String(), "too many open files") {
			t.Errorf("the node's log does not give the accept failure's cause:\n%s", d.out.String())
		}
		closeAll(cs)
		waitCLI(t, d, "checkpoint")
	})
}

// waitCLI runs the CLI with args until it succeeds (10 s at most).
func waitCLI(t *testing.T, d *devNode, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := run(t, bin.cli, append([]string{"--node", d.addr}, args...)...)
		if code == 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("gpuledger %v still fails after the flood: exit %d\n%s%s\nnode log:\n%s", args, code, out, errOut, d.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// smallDisk mounts a tmpfs of size bytes for the test, or skips it where
// the test may not mount one.
func smallDisk(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a small file system here (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file of zeros into dir until at most leave bytes are free
// (0: until the file system is full) and returns its path.
func fill(t *testing.T, dir string, leave uint64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := st.Bavail * uint64(st.Bsize)
		if free <= leave {
			return path
		}
		n := min(uint64(len(chunk)), free-leave)
		if leave == 0 {
			n = uint64(len(chunk))
		}
		if _, err := f.Write(chunk[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// TestDiskFull: a full disk never crashes a node. On a 1.5 GiB file system
// a node keeping 900 MiB free accepts writes; once the disk is filled to the
// last byte it refuses them with RESOURCE_EXHAUSTED NO_SPACE, says so in
// health (gpuledger.writes NOT_SERVING) and cluster status, and goes on
// serving reads; when space is freed it accepts writes again. Restarted on
// the full disk it starts read-only with the alarm up, serves reads, and
// reopens for writing once space returns. Nothing written is lost.
func TestDiskFull(t *testing.T) {
	disk := smallDisk(t, 1536<<20)
	d := startDaemon(t, disk, "dev", "--data", disk, "--min-free-space", "900MiB")
	submit := func(serial string) (string, int) {
		out, errOut, code := run(t, bin.cli, "--node", d.addr, "submit", "manufacture", "--key", d.key("acme-gpu"), "--serial", serial, "--model", "H100-SXM5-80GB")
		return out + errOut, code
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s; node log:\n%s", what, d.out.String())
			}
		}
	}
	health := func() string {
		out, errOut, _ := run(t, bin.grpcurl, "-plaintext", "-d", `{"service":"gpuledger.writes"}`, d.addr, "grpc.health.v1.Health/Check")
		return out + errOut
	}
	if out, code := submit("GPU-DISK-1"); code != 0 {
		t.Fatalf("a write with room: exit %d\n%s", code, out)
	}
	filler := fill(t, disk, 0)
	var out string
	tries := 0
	until("writes refused on the full disk", func() bool {
		tries++
		var code int
		out, code = submit(fmt.Sprintf("GPU-DISK-R%d", tries))
		return code != 0 && strings.Contains(out, "NO_SPACE")
	})
	if !strings.Contains(out, "ResourceExhausted") || !strings.Contains(out, "less than its --min-free-space of 900 MiB") {
		t.Errorf("the refusal does not say why:\n%s", out)
	}
	if h := health(); !strings.Contains(h, "NOT_SERVING") {
		t.Errorf("health of gpuledger.writes on the full disk:\n%s", h)
	}
	if st := d.cli(t, "cluster", "status"); !regexp.MustCompile(`WARNING\s+NO_SPACE: node node-1 has`).MatchString(st) {
		t.Errorf("cluster status on the full disk:\n%s", st)
	}
	if s := d.cli(t, "serial", "GPU-DISK-1"); !strings.Contains(s, "acme-gpu") {
		t.Errorf("a read on the full disk:\n%s", s)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	until("writes accepted once space is freed", func() bool {
		var code int
		out, code = submit("GPU-DISK-2")
		if code != 0 {
			t.Logf("not yet: %s", out)
		}
		return code == 0
	})
	if h := health(); !strings.Contains(h, `"SERVING"`) {
		t.Errorf("health of gpuledger.writes with room again:\n%s", h)
	}

	// Restarted on a full disk: read-only, alarm up, reads served.
	d.stop()
	filler = fill(t, disk, 0)
	d = startDaemon(t, disk, "dev", "--data", disk, "--min-free-space", "900MiB")
	until("the read-only start is reported", func() bool { return strings.Contains(d.out.String(), "starting read-only") })
	if out, code := submit("GPU-DISK-3"); code == 0 || !strings.Contains(out, "NO_SPACE") || !strings.Contains(out, "started on it with its store read-only") {
		t.Errorf("a write to a node started on a full disk: exit %d\n%s", code, out)
	}
	if st := d.cli(t, "cluster", "status"); !strings.Contains(st, "read-only") || !strings.Contains(st, "NO_SPACE") {
		t.Errorf("cluster status of a read-only node:\n%s", st)
	}
	for _, sn := range []string{"GPU-DISK-1", "GPU-DISK-2"} {
		if s := d.cli(t, "serial", sn); !strings.Contains(s, "acme-gpu") {
			t.Errorf("read %s from the read-only node:\n%s", sn, s)
		}
	}
	os.Remove(filler)
	until("the node reopens for writing once space returns", func() bool { _, code := submit("GPU-DISK-3"); return code == 0 })
	if out := d.cli(t, "verify", "--genesis", filepath.Join(disk, "genesis.json"), "GPU-DISK-3"); !strings.HasPrefix(out, "OK GPU-DISK-3") {
		t.Errorf("verify after the disk filled twice:\n%s", out)
	}
}

// TestTenYearHistory: a legitimate long history always verifies. A GPU
// attested daily for ten years (3,654 events, each attestation with 2 KiB
// of evidence) is imported through the real CLI, then verified from the
// node page by page (verify SERIAL) and offline from its custody passport.
func TestTenYearHistory(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	start := time.Now().UTC().Add(-3660 * 24 * time.Hour).Truncate(time.Second)
	evidence := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, 2048))
	var b strings.Builder
	line := func(typ, actor, extra string, at time.Time) {
		fmt.Fprintf(&b, `{"serial":"GPU-10Y","type":"EVENT_TYPE_%s","actor":"%s",%s"occurredAt":"%s"}`+"\n", typ, actor, extra, at.Format(time.RFC3339))
	}
	line("MANUFACTURED", "acme-gpu", `"model":"H100-SXM5-80GB","eccn":"3A090.a","location":{"country":"TW","siteId":"hsinchu-fab"},`, start)
	line("SHIPPED", "acme-gpu", `"counterparty":"dc-frankfurt","exportLicense":"DE-2016-1","location":{"country":"TW","siteId":"hsinchu-fab"},`, start.Add(time.Hour))
	line("RECEIVED", "dc-frankfurt", `"counterparty":"acme-gpu","location":{"country":"DE","siteId":"fra-dc1"},`, start.Add(5*24*time.Hour))
	line("INSTALLED", "dc-frankfurt", `"location":{"country":"DE","siteId":"fra-dc1"},`, start.Add(6*24*time.Hour))
	for i := range 3650 {
		line("ATTESTED", "dc-frankfurt", `"location":{"country":"DE","siteId":"fra-dc1"},"evidence":[{"type":"application/vnd.nvidia.attestation-report","data":"`+evidence+`"}],`,
			start.Add(time.Duration(7+i)*24*time.Hour))
	}
	file := filepath.Join(t.TempDir(), "ten-years.jsonl")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := d.cli(t, "import", file, "--keys", filepath.Join(dir, "keys"), "--quiet"); !strings.Contains(out, "3654 accepted") {
		t.Fatalf("import:\n%s", out)
	}
	genesis := filepath.Join(dir, "genesis.json")
	if out := d.cli(t, "verify", "--genesis", genesis, "GPU-10Y"); !strings.HasPrefix(out, "OK GPU-10Y: chain intact; 3654 entries") {
		t.Fatalf("verify GPU-10Y:\n%.600s", out)
	}
	passport := filepath.Join(t.TempDir(), "GPU-10Y.passport")
	d.cli(t, "passport", "GPU-10Y", "--file", passport)
	if st, err := os.Stat(passport); err != nil || st.Size() < 3654*2048 {
		t.Fatalf("passport: %v %v", st, err)
	}
	out, errOut, code := run(t, bin.cli, "verify", "--passport", passport, "--genesis", genesis)
	if code != 0 || !strings.HasPrefix(out, "OK passport of GPU-10Y: 3654 entries verified offline") {
		t.Fatalf("verify --passport: exit %d\n%.600s%s", code, out, errOut)
	}
}

// TestClientRateFlag: gpuledgerd --client-rate limits one client's calls,
// as grpcurl sees it: past the burst a call is refused with
// RESOURCE_EXHAUSTED naming the flag, and a moment later it is served again.
func TestClientRateFlag(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir, "dev", "--data", dir, "--client-rate", "2")
	call := func() (string, int) {
		out, errOut, code := run(t, bin.grpcurl, "-plaintext", d.addr, "gpuledger.v1.AuditService/GetCheckpoint")
		return out + errOut, code
	}
	refused := ""
	for range 12 {
		if out, code := call(); code != 0 {
			refused = out
			break
		}
	}
	if !strings.Contains(refused, "ResourceExhausted") || !strings.Contains(refused, "gpuledgerd --client-rate") {
		t.Fatalf("12 calls at --client-rate 2: the last said\n%s\nwant RESOURCE_EXHAUSTED naming --client-rate", refused)
	}
	time.Sleep(1500 * time.Millisecond)
	if out, code := call(); code != 0 {
		t.Fatalf("a call after the pause: exit %d\n%s", code, out)
	}
}

package e2e

import (
	"io"
	"net"
	"strings"
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

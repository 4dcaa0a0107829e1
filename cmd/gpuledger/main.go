// Command gpuledger is the gpuledger CLI for participants and auditors: keys,
// genesis files, signed submissions, imports, reads and client-side
// verification. Run "gpuledger --help".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gpuledger/gpuledger/client"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/internal/version"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// DefaultNode is the node address used when neither --node nor
// GPULEDGER_NODE is set.
const DefaultNode = "127.0.0.1:7600"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// $GPULEDGER_CPUPROFILE names a file for a CPU profile of the command
	// (go tool pprof reads it): for reports of a slow verify --all.
	if f := os.Getenv("GPULEDGER_CPUPROFILE"); f != "" {
		if w, err := os.Create(f); err == nil && pprof.StartCPUProfile(w) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	pprof.StopCPUProfile()
	if err != nil {
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code))
		}
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "gpuledger:", describe(err))
		}
		os.Exit(1)
	}
}

// exitCode is returned by a command that has printed its result and exits
// with a status of its own (verify --fail-on-findings: 3).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// cli carries the global flags and the open connection.
type cli struct {
	node    string
	output  string
	timeout time.Duration
	out     io.Writer
	errOut  io.Writer
	conn    *grpc.ClientConn
	warned  bool // the stale-read warning was printed
	// minIndex is sent with every call as the gpuledger-min-index header.
	minIndex uint64
	// ledger is the node's ledger id, once asked (ledgerID).
	ledger string
	// How to reach the node: its CA, plaintext, and who to call as
	// (--identity, else the key a command signs with: as).
	cacert       string
	plaintext    bool
	identityFile string
	token        bool
	as           *keys.KeySet
	// genesis is the trusted genesis receipts are checked against
	// (submit, import, registry: --genesis, $GPULEDGER_GENESIS).
	genesis  string
	unproven bool // the unverified-receipt warning was printed
}

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	c := &cli{out: out, errOut: errOut}
	root := &cobra.Command{
		Version: version.String(),
		Use:     "gpuledger",
		Short:   "gpuledger records and verifies the custody of export-controlled GPUs",
		Long: `gpuledger is the command line of a gpuledger consortium. Participants use it to
make keys, sign and submit custody events (manufacture, ship, receive, install,
attest, decommission, destroy, report-lost) and import histories; auditors use
it to read serials and checkpoints and to verify a serial's chain on their own
machine, trusting only the genesis.

Every read takes -o json for scripts. The node is --node, else $GPULEDGER_NODE,
else ` + DefaultNode + ` (what "gpuledgerd dev" serves). Nodes serve TLS: give the
CA that issued the node's certificate with --cacert or $GPULEDGER_CACERT (run
from a directory holding ./.gpuledger-dev, the dev node's CA is found by
itself). Where a node's read scope is not open, authenticate with your
participant key (--identity; commands that sign use their --key). Give the
genesis you trust (--genesis or $GPULEDGER_GENESIS) and every receipt is
verified before it is believed.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPostRun: func(*cobra.Command, []string) {
			if c.conn != nil {
				c.conn.Close()
			}
		},
	}
	node := os.Getenv("GPULEDGER_NODE")
	if node == "" {
		node = DefaultNode
	}
	root.PersistentFlags().StringVar(&c.node, "node", node, "node address host:port (env GPULEDGER_NODE)")
	root.PersistentFlags().StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline for each call to the node")
	root.PersistentFlags().StringVar(&c.cacert, "cacert", os.Getenv("GPULEDGER_CACERT"), "PEM file of the CA that issued the node's TLS certificate (env GPULEDGER_CACERT; default: the system's CAs, or a dev node's DIR/tls/ca.pem found in ./.gpuledger-dev)")
	root.PersistentFlags().BoolVar(&c.plaintext, "plaintext", os.Getenv("GPULEDGER_PLAINTEXT") == "1", "connect without TLS (env GPULEDGER_PLAINTEXT=1); the default for a node on loopback when no CA is given or found")
	root.PersistentFlags().StringVar(&c.identityFile, "identity", os.Getenv("GPULEDGER_IDENTITY"), "private key file to authenticate to the node with, as its participant (env GPULEDGER_IDENTITY; default: the --key a command signs with); nodes with --read-scope authenticated or scoped need one")
	root.PersistentFlags().StringVar(&c.genesis, "genesis", "", "the genesis file you trust (env GPULEDGER_GENESIS; a dev node's is DIR/genesis.json): verify checks against it; submit, import and registry verify the node's receipts with it; tokens are bound to its ledger id")
	root.PersistentFlags().BoolVar(&c.token, "token", false, "authenticate with a signed token per call instead of a TLS client certificate (always so for a key without Ed25519)")
	root.PersistentFlags().Uint64Var(&c.minIndex, "min-index", 0, "reads wait (briefly) until the node has applied this log size, else fail: read your own writes (an append's entry index + 1) on any node")
	root.AddCommand(keygenCmd(c), nodekeyCmd(c), clientCertCmd(c), genesisCmd(c), submitCmd(c), importCmd(c),
		serialCmd(c), historyCmd(c), gapsCmd(c), simulateCmd(c), passportCmd(c), checkpointCmd(c), proofCmd(c), verifyCmd(c), clusterCmd(c), registryCmd(c),
		participantsCmd(c), policyCmd(c), serialsCmd(c))
	for _, cmd := range root.Commands() {
		groupOnly(cmd)
		switch cmd.Name() {
		case "keygen", "nodekey", "genesis", "client-cert":
			offline(cmd)
		}
	}
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)
	if err := root.ExecuteContext(ctx); err != nil {
		if connectionError(err) {
			return fmt.Errorf("no node answers at %s: start one (make run), or give its host:port with --node or GPULEDGER_NODE", c.node)
		}
		return err
	}
	return nil
}

// groupOnly makes a command that only groups subcommands (submit, registry,
// genesis) report an unknown subcommand by its name, with the ones it has,
// instead of failing on the first flag it does not know.
func groupOnly(cmd *cobra.Command) {
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil {
		return
	}
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		return fmt.Errorf("%s has no subcommand %q; it has %s (see %s --help)", cmd.CommandPath(), args[0], strings.Join(names, ", "), cmd.CommandPath())
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	cmd.FParseErrWhitelist.UnknownFlags = true
	for _, sub := range cmd.Commands() {
		groupOnly(sub)
	}
}

// networkFlags are the root's flags that only commands talking to a node use.
var networkFlags = []string{"node", "timeout", "min-index", "cacert", "plaintext", "identity", "token", "genesis"}

// offline marks a command that works on files alone: its help does not show
// the network flags, and giving one is an error rather than silently unused.
func offline(cmd *cobra.Command) {
	help := cmd.HelpFunc()
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		for _, n := range networkFlags {
			if f := c.Root().PersistentFlags().Lookup(n); f != nil {
				f.Hidden = true
			}
		}
		help(c, args)
	})
	cmd.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		for _, n := range networkFlags {
			if f := c.Root().PersistentFlags().Lookup(n); f != nil && f.Changed {
				return fmt.Errorf("%s works on files alone and talks to no node: drop --%s", c.CommandPath(), n)
			}
		}
		return nil
	}
}

// needArgs is cobra.ExactArgs with a message that names what is missing and
// shows the usage.
func needArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return fmt.Errorf("%s needs %s; usage: %s", cmd.CommandPath(), strings.Join(names[len(args):], " and "), cmd.UseLine())
		case len(args) > len(names):
			return fmt.Errorf("%s takes %s, and got %d arguments (%s); usage: %s", cmd.CommandPath(), plural(len(names), "argument"), len(args), strings.Join(args, " "), cmd.UseLine())
		}
		return nil
	}
}

// connectionError reports whether err is gRPC's "nothing answers there".
func connectionError(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.ErrorInfo); ok {
			return false // the node answered
		}
	}
	return strings.Contains(st.Message(), "connection refused") || strings.Contains(st.Message(), "no such host") ||
		strings.Contains(st.Message(), "connection reset")
}

// checkNodeAddress refuses what gRPC would misread: a URL, or a host with no
// port (gRPC would silently use 443).
func checkNodeAddress(addr string) error {
	if strings.Contains(addr, "://") {
		return fmt.Errorf("--node %q: give host:port (for example 127.0.0.1:7600), not a URL", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("--node %q: give host:port, for example 127.0.0.1:7600 (a port is required)", addr)
	}
	return nil
}

// dial connects to the node (lazily, once).
func (c *cli) dial() (*grpc.ClientConn, error) {
	if c.output != "table" && c.output != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", c.output)
	}
	if c.conn != nil {
		return c.conn, nil
	}
	if err := checkNodeAddress(c.node); err != nil {
		return nil, err
	}
	o, err := c.clientOptions()
	if err != nil {
		return nil, err
	}
	conn, err := client.Dial(c.node, o,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(16<<20)),
		// Reads of 256 KiB (gRPC's default is 32), and flow-control windows
		// of 4 MiB a stream and 8 MiB the connection (the default starts at
		// 64 KiB and grows): verify --all receives the whole log, and the
		// window updates the small windows called for cost 8% of the
		// node's CPU and 0.2 s of the CLI's system time over 240,000
		// entries.
		grpc.WithReadBufferSize(256<<10), grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(8<<20),
		grpc.WithChainUnaryInterceptor(c.unaryInterceptor), grpc.WithChainStreamInterceptor(c.streamInterceptor))
	if err != nil {
		return nil, fmt.Errorf("--node %q: %w", c.node, err)
	}
	c.conn = conn
	return conn, nil
}

// devCA is where "make run" keeps its node's CA, relative to the working
// directory.
const devCA = ".gpuledger-dev/tls/ca.pem"

// clientOptions says how to reach the node: --plaintext; else TLS with
// --cacert; else, on loopback, TLS with a dev node's CA when ./.gpuledger-dev
// has one, or plaintext (a node on loopback may serve either); else TLS with
// the system's CAs. The identity is --identity, else the command's key.
func (c *cli) clientOptions() (client.Options, error) {
	o := client.Options{CACertFile: c.cacert, Plaintext: c.plaintext, Token: c.token}
	if !o.Plaintext && o.CACertFile == "" && client.IsLoopback(c.node) {
		if _, err := os.Stat(devCA); err == nil {
			o.CACertFile = devCA
		} else {
			o.Plaintext = true
		}
	}
	if c.plaintext && c.cacert != "" {
		return o, errors.New("--plaintext and --cacert: give one or the other (--cacert is for a node that serves TLS)")
	}
	o.Identity = c.as
	if c.identityFile != "" {
		ks, err := keys.ReadFile(c.identityFile)
		if err != nil {
			return o, fmt.Errorf("--identity: %w", err)
		}
		if ks.Participant == "" {
			return o, fmt.Errorf("--identity %s names no participant; make keys with gpuledger keygen --participant ID", c.identityFile)
		}
		o.Identity = ks
	}
	if o.Identity != nil && o.Plaintext {
		o.Identity = nil // nothing to authenticate over plaintext: such a node's read scope is open
	}
	if o.Identity != nil && (o.Token || !hasEd25519(o.Identity)) {
		if c.genesis == "" {
			c.genesis = os.Getenv("GPULEDGER_GENESIS")
		}
		if c.genesis == "" {
			return o, errors.New("authenticating with tokens needs the ledger's id: give --genesis FILE (or GPULEDGER_GENESIS)")
		}
		g, err := os.ReadFile(c.genesis)
		if err != nil {
			return o, fmt.Errorf("--genesis: %w", err)
		}
		o.LedgerID = consortium.LedgerID(g)
	}
	return o, nil
}

func hasEd25519(ks *keys.KeySet) bool {
	_, ok := ks.Ed25519()
	return ok
}

// ledgerID returns the id of the node's ledger, from its checkpoint's
// origin, for the payloads the CLI signs: every signed event and registry
// change names its ledger, so that no other ledger accepts it.
func (c *cli) ledgerID(ctx context.Context) (string, error) {
	if c.ledger != "" {
		return c.ledger, nil
	}
	if c.genesis != "" {
		// The genesis this client trusts names the ledger; the node is not asked.
		g, err := os.ReadFile(c.genesis)
		if err != nil {
			return "", fmt.Errorf("--genesis: %w", err)
		}
		c.ledger = consortium.LedgerID(g)
		return c.ledger, nil
	}
	var r *pb.GetCheckpointResponse
	if err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		r, err = gpuledgerv1grpc.NewAuditServiceClient(conn).GetCheckpoint(ctx, &pb.GetCheckpointRequest{})
		return err
	}); err != nil {
		return "", err
	}
	id, err := ledger.IDFromOrigin(r.GetCheckpoint().GetOrigin())
	if err != nil {
		return "", fmt.Errorf("the node's %w", err)
	}
	c.ledger = id
	return id, nil
}

func (c *cli) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, c.timeout)
}

// call dials the node and runs one call under the --timeout deadline.
func (c *cli) call(parent context.Context, fn func(ctx context.Context, conn *grpc.ClientConn) error) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(parent)
	defer cancel()
	return fn(ctx, conn)
}

// unaryInterceptor and streamInterceptor send --min-index with every call
// and print, once, the node's warning that its reads may be behind the
// cluster (the gpuledger-stale header).
func (c *cli) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx = c.withMinIndex(ctx)
	var md metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
	c.staleHeader(md)
	return err
}

func (c *cli) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(c.withMinIndex(ctx), desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &headerStream{ClientStream: s, c: c}, nil
}

// withMinIndex adds the gpuledger-min-index header (node.MDMinIndex).
func (c *cli) withMinIndex(ctx context.Context) context.Context {
	if c.minIndex == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "gpuledger-min-index", strconv.FormatUint(c.minIndex, 10))
}

// headerStream reads the stream's header after its first message (the
// header arrives no earlier).
type headerStream struct {
	grpc.ClientStream
	c    *cli
	seen bool
}

func (s *headerStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if !s.seen {
		s.seen = true
		if h, herr := s.ClientStream.Header(); herr == nil {
			s.c.staleHeader(h)
		}
	}
	return err
}

func (c *cli) staleHeader(md metadata.MD) {
	// The headers are node.MDStale and node.MDAppliedSize (the CLI does not
	// link the node).
	if v := md.Get("gpuledger-stale"); len(v) > 0 && !c.warned {
		c.warned = true
		size := md.Get("gpuledger-applied-size")
		fmt.Fprintf(c.errOut, "warning: stale read from %s (applied size %s): %s\n", c.node, strings.Join(size, ""), v[0])
	}
}

// json reports whether output is JSON.
func (c *cli) json() bool { return c.output == "json" }

// printJSON writes a message as indented protojson.
func (c *cli) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.out, string(b))
	return err
}

// table returns a tabwriter for aligned output; call Flush.
func (c *cli) table() *tabwriter.Writer { return tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0) }

// describe turns an error into one line: for gRPC errors the code, the
// ErrorInfo reason and the server's message.
// reasonOf is the ErrorInfo reason of a gRPC error, or "".
func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func describe(err error) string {
	// A gRPC error wrapped in context ("lines 3 to 9: ...") keeps the
	// context and is rendered once, not as gRPC's "rpc error: code = ...".
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return err.Error()
	}
	prefix := strings.TrimSuffix(err.Error(), se.(error).Error())
	st := se.GRPCStatus()
	reason := ""
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	msg := st.Message()
	switch {
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		msg += " (the node serves plaintext: give --plaintext)"
	case strings.Contains(msg, "certificate signed by unknown authority"):
		msg += " (give the CA that issued the node's certificate: --cacert FILE or GPULEDGER_CACERT)"
	case strings.Contains(msg, "cannot validate certificate") || strings.Contains(msg, "certificate is valid for"):
		msg += " (the node's certificate is not for the address in --node)"
	}
	if reason != "" {
		return fmt.Sprintf("%s%s (%s): %s", prefix, st.Code(), reason, msg)
	}
	return fmt.Sprintf("%s%s: %s", prefix, st.Code(), msg)
}

// retryable reports whether a failed append may be sent again: the node
// answered UNAVAILABLE itself (an election, no majority yet, a leader being
// replaced). Appends are idempotent, so a retry never records twice. A node
// that does not answer at all is not retried.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == "gpuledger.dev" {
			return true
		}
	}
	return false
}

// retryDelay is how long to wait before attempt n+1: the node's RetryInfo
// hint or a growing default, whichever is longer.
func retryDelay(err error, attempt int) time.Duration {
	d := time.Duration(attempt) * 300 * time.Millisecond
	if st, ok := status.FromError(err); ok {
		for _, x := range st.Details() {
			if ri, ok := x.(*errdetails.RetryInfo); ok {
				d = max(d, ri.GetRetryDelay().AsDuration())
			}
		}
	}
	return d
}

// errSilent is returned after a command has printed its own failure.
var errSilent = errors.New("failed")

// interactive reports whether w is a terminal: progress bars only go there.
func interactive(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// result prints a command's result: fields as one JSON object with -o json,
// else text.
func (c *cli) result(text string, fields map[string]any) error {
	if !c.json() {
		_, err := fmt.Fprint(c.out, text)
		return err
	}
	b, err := json.MarshalIndent(fields, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "%s\n", b)
	return err
}

// plural is "1 thing" or "n things" ("entry", "entries").
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	if strings.HasSuffix(thing, "y") && !strings.HasSuffix(thing, "ey") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(thing, "y"))
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// safeText makes text written by a participant (a model, a reference, a
// display name) safe to print on a terminal: control characters and other
// unprintable runes are shown escaped (\x1b, \u202e), never interpreted.
func safeText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// sortedKeys returns the keys of the maps, sorted, each once.
func sortedKeys[V any](ms ...map[string]V) []string {
	var out []string
	for _, m := range ms {
		for k := range m {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

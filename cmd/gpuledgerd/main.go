// Command gpuledgerd runs a gpuledger node.
//
//	gpuledgerd serve --data DIR --genesis FILE --node-key FILE [--listen ADDR]
//	gpuledgerd dev   [--data DIR] [--listen ADDR]
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/gpuledger/gpuledger/auth"
	"github.com/gpuledger/gpuledger/client"
	"github.com/gpuledger/gpuledger/internal/version"
	"github.com/gpuledger/gpuledger/node"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		if !errors.Is(err, errFailed) {
			fmt.Fprintln(os.Stderr, "gpuledgerd:", err)
		}
		os.Exit(1)
	}
}

// DefaultListen is the address a node serves on unless told otherwise.
const DefaultListen = "127.0.0.1:7600"

func run(ctx context.Context, args []string) error {
	root := &cobra.Command{
		Version: version.String(),
		Use:     "gpuledgerd",
		Short:   "gpuledgerd runs a gpuledger node",
		Long: `gpuledgerd runs a gpuledger node: it holds the whole ledger in an embedded
badger store, sequences writes through raft, and serves the LedgerService,
AuditService, RegistryService and ClusterService over gRPC, with
grpc.health.v1 and server reflection (so grpcurl needs no .proto files).

Start with "gpuledgerd dev": it creates a development consortium (keys and a
genesis) in its data directory on first start and serves at once. Several
organisations' nodes form a cluster: see "gpuledgerd serve --help", and
"gpuledgerd dev --nodes 3" for a development cluster (make cluster).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), devCmd(), checkCmd())
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// common holds the flags that serve and dev share.
type common struct {
	data, listen, logLevel string
	batchWindow            time.Duration
	snapInterval           time.Duration
	snapThreshold, trail   uint64
	maxConns               int
	minFree                string
	clientRate             int
	watchStreams           int
	watchPerClient         int
	tlsCert, tlsKey, tlsCA string
	readScope              string
}

func (c *common) flags(cmd *cobra.Command, dataDefault string) {
	d := node.DefaultConfig("", "")
	cmd.Flags().StringVar(&c.data, "data", dataDefault, "data directory (ledger, raft log)")
	cmd.Flags().StringVar(&c.listen, "listen", DefaultListen, "address to serve gRPC and raft on (host:port)")
	cmd.Flags().StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().DurationVar(&c.batchWindow, "batch-window", d.BatchWindow, "how long a write waits for others to share its raft command")
	cmd.Flags().DurationVar(&c.snapInterval, "snapshot-interval", d.SnapshotInterval, "how often raft considers snapshotting the ledger and compacting its log")
	cmd.Flags().Uint64Var(&c.snapThreshold, "snapshot-threshold", d.SnapshotThreshold, "raft commands applied since the last snapshot that make the next one due")
	cmd.Flags().IntVar(&c.maxConns, "max-connections", d.MaxConnections, "client connections the node holds open at most (0: no limit); past it a client is refused with a GOAWAY saying why. The default is half the open-file limit (ulimit -n), from 16 to 4096")
	cmd.Flags().IntVar(&c.clientRate, "client-rate", d.ClientRate, "calls a second one client (IPv4 address, or IPv6 /64) may start, with bursts of twice that; past it RESOURCE_EXHAUSTED RATE_LIMITED with a RetryInfo (0: no limit; the cluster's nodes are not limited)")
	cmd.Flags().IntVar(&c.watchStreams, "max-watch-streams", d.MaxWatchStreams, "WatchFindings streams the node serves at most (0: no limit)")
	cmd.Flags().IntVar(&c.watchPerClient, "max-watch-streams-per-client", d.MaxWatchStreamsPerClient, "WatchFindings streams one client may hold open (0: no limit)")
	cmd.Flags().StringVar(&c.minFree, "min-free-space", humanize.IBytes(node.DefaultMinFreeSpace), "free disk space in --data below which the node accepts no writes (RESOURCE_EXHAUSTED NO_SPACE) but goes on serving reads, so that a full disk never crashes it; at least 800 MiB (what its stores reserve), or 0 to turn the guard off")
	cmd.Flags().StringVar(&c.tlsCert, "tls-cert", "", "serve gRPC over TLS 1.3 with this certificate (PEM chain; re-read when it changes); required unless --listen is loopback")
	cmd.Flags().StringVar(&c.tlsKey, "tls-key", "", "the private key of --tls-cert (PEM, mode 0600)")
	cmd.Flags().StringVar(&c.tlsCA, "tls-client-ca", "", "require a client certificate of every client: one issued by this CA (PEM), or one over a registered participant or node key")
	cmd.Flags().StringVar(&c.readScope, "read-scope", "open", "who reads what: open (anyone who reaches the node), authenticated (registered participants and nodes), scoped (auditors, regulators and nodes all; a participant the serials it has been party to); all but open need TLS, and writes then need authentication too")
	cmd.Flags().Uint64Var(&c.trail, "trailing-logs", d.TrailingLogs, "raft commands kept after a snapshot, for followers a little behind (those further behind get the snapshot)")
}

func (c *common) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func readNodeKey(path string) (*auth.NodeKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("node key %s has mode %v: it must not be readable by group or others (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	s, err := auth.ParseNodeKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("node key %s is not a signed-note private key (PRIVATE+KEY+...): %w", path, err)
	}
	return s, nil
}

// serve opens a node and serves it on c.listen until ctx ends, then shuts
// down in order: gRPC, raft, the store. ready, if set, runs once serving.
// A node alone waits to lead before it says it serves, so that the first
// write succeeds; a cluster member serves at once (reads, status) and writes
// succeed once a majority is up.
//
// A node that started read-only for lack of disk space is reopened, on the
// same address, once space returns.
func serve(ctx context.Context, c *common, log *slog.Logger, cfg node.Config, ready func(addr string)) error {
	cfg.Logger, cfg.BatchWindow = log, c.batchWindow
	cfg.SnapshotInterval, cfg.SnapshotThreshold, cfg.TrailingLogs = c.snapInterval, c.snapThreshold, c.trail
	cfg.MaxConnections = c.maxConns
	cfg.ClientRate, cfg.MaxWatchStreams, cfg.MaxWatchStreamsPerClient = c.clientRate, c.watchStreams, c.watchPerClient
	if c.minFree != "0" {
		b, err := humanize.ParseBytes(c.minFree)
		if err != nil {
			return fmt.Errorf("--min-free-space %q: want a size such as 1GiB or 900MB, or 0", c.minFree)
		}
		cfg.MinFreeSpace = b
	} else {
		cfg.MinFreeSpace = 0
	}
	var err error
	if cfg.ReadScope, err = node.ParseScope(c.readScope); err != nil {
		return fmt.Errorf("--read-scope: %w", err)
	}
	switch {
	case c.tlsCert != "" || c.tlsKey != "":
		if c.tlsCert == "" || c.tlsKey == "" {
			return errors.New("--tls-cert and --tls-key go together: give both")
		}
		if st, err := os.Stat(c.tlsKey); err != nil {
			return fmt.Errorf("--tls-key: %w", err)
		} else if st.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("--tls-key %s has mode %v: it must not be readable by group or others (chmod 600 %s)", c.tlsKey, st.Mode().Perm(), c.tlsKey)
		}
		cfg.TLS = &node.TLSFiles{CertFile: c.tlsCert, KeyFile: c.tlsKey, ClientCAFile: c.tlsCA}
	case c.tlsCA != "":
		return errors.New("--tls-client-ca needs TLS: give --tls-cert and --tls-key too")
	case cfg.ReadScope != node.ScopeOpen:
		return fmt.Errorf("--read-scope %s needs TLS (--tls-cert, --tls-key): identities and what they read must not cross the network in plaintext", cfg.ReadScope)
	case !client.IsLoopback(c.listen):
		return fmt.Errorf("--listen %s is not a loopback address, and without --tls-cert and --tls-key the node would serve in plaintext, readable and forgeable on the way: give a certificate (see the README's cluster section)", c.listen)
	default:
		log.Warn("serving gRPC in plaintext on loopback: fine on one machine; give --tls-cert and --tls-key to serve a network", "listen", c.listen)
	}
	listen := c.listen
	for {
		again, addr, err := serveOnce(ctx, listen, log, cfg, ready)
		if !again {
			return err
		}
		log.Info("disk space is back: reopening the node's store for writing", "addr", addr)
		listen = addr
		if cfg.Advertise == "" {
			cfg.Advertise = addr
		}
	}
}

// serveOnce opens the node and serves it until ctx ends (again false) or,
// for a node opened read-only for lack of disk space, until space returns
// (again true, with the address it served on).
func serveOnce(ctx context.Context, listen string, log *slog.Logger, cfg node.Config, ready func(addr string)) (again bool, addr string, err error) {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return false, "", fmt.Errorf("listen on %s: %w (is another node running there? use --listen)", listen, err)
	}
	cfg.Listener = lis
	n, err := node.Open(ctx, cfg)
	if err != nil {
		lis.Close()
		return false, "", err
	}
	addr = lis.Addr().String()
	if a := n.Alarm(); a != "" {
		log.Error("serving the alarm only: ledger RPCs are refused", "reason", a)
	} else if len(cfg.Peers) == 0 && cfg.Join == "" && n.Cluster() == 1 {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = n.WaitLeader(wctx)
		cancel()
		if err != nil {
			return false, addr, errors.Join(err, n.Close(context.Background()))
		}
	}
	s := n.NewServer()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(n.GRPCListener()) }()
	log.Info("serving", "node", cfg.Name, "addr", n.Addr(), "entries", n.Size())
	if a := n.Alarm(); a != "" {
		fmt.Printf("gpuledger node %s serving on %s: ALARM, ledger RPCs refused: %s\n", cfg.Name, n.Addr(), a)
	} else if ready != nil {
		ready(n.Addr())
	}
	if n.SpaceBack() != nil {
		fmt.Printf("gpuledger node %s serving on %s READ-ONLY: too little free disk space to write; reads are served, writes refused (NO_SPACE) until space is freed\n", cfg.Name, n.Addr())
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
		log.Error("gRPC server stopped", "err", err)
	case <-n.SpaceBack():
		again = true
	}
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		s.Stop()
	}
	return again, addr, errors.Join(err, n.Close(context.Background()))
}

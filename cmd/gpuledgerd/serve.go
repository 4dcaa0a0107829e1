package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/node"
	"github.com/spf13/cobra"
)

func serveCmd() *cobra.Command {
	var c common
	var genesis, nodeKey, peers, join, advertise string
	var applyDelay time.Duration
	var withhold int
	var staleMap int64
	cmd := &cobra.Command{
		Use:   "serve --data DIR --genesis FILE --node-key FILE [--listen ADDR] [--peers LIST | --join ADDR]",
		Short: "serve a node of an existing consortium",
		Long: `serve runs a node of a consortium whose genesis file and node key you have.
The node key is a signed-note private key (PRIVATE+KEY+<name>+...) whose name
is the node's name and whose verifier key is listed in the genesis; the file
must have mode 0600. The genesis is needed on first start; later starts check
it against the store.

The node serves gRPC and raft on one address (--listen; --advertise if peers
reach it at another). Alone, it is a one-voter cluster. To found a cluster,
start every founding node with the same --peers list of name=host:port, its
own entry included; writes succeed once a majority is up. To add a node to a
running cluster, start it with --join host:port of any member: it asks,
signed with its node key, to be added as a voter (the registry must list the
node). --peers and --join count only on a node's first start; afterwards the
raft state in --data says who the members are.

A node on a network serves TLS 1.3 (--tls-cert, --tls-key: its organisation's
certificate for the name clients use, re-read when the files change); only on
loopback may it serve plaintext. Nodes reach each other over TLS bound to
their node keys, so the organisations need no common CA. --read-scope says
who reads what: open, authenticated (registered participants and nodes) or
scoped (auditors, regulators and nodes everything; a participant the serials
it has been party to). Clients authenticate with a certificate over their
participant key (gpuledger --identity; gpuledger client-cert for others) or a
signed token per call.`,
		Example: `  gpuledgerd serve --data /var/lib/gpuledger --genesis genesis.json --node-key node.key \
      --tls-cert /etc/gpuledger/node.pem --tls-key /etc/gpuledger/node-key.pem --read-scope scoped \
      --listen 10.0.0.1:7600 --peers acme-1=10.0.0.1:7600,eudist-1=10.0.1.1:7600,dcfra-1=10.0.2.1:7600`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := c.logger()
			if err != nil {
				return err
			}
			if nodeKey == "" {
				return fmt.Errorf("--node-key is required")
			}
			signer, err := readNodeKey(nodeKey)
			if err != nil {
				return err
			}
			var g []byte
			if genesis != "" {
				if g, err = os.ReadFile(genesis); err != nil {
					return fmt.Errorf("--genesis: %w", err)
				}
			}
			cfg := node.DefaultConfig(signer.Name(), c.data)
			cfg.Genesis, cfg.NodeSigner, cfg.Join, cfg.Advertise = g, signer, join, advertise
			cfg.ApplyDelay, cfg.WithholdLast = applyDelay, withhold
			cfg.StaleMap, cfg.StaleMapSize = staleMap >= 0, uint64(max(staleMap, 0))
			if cfg.Peers, err = parsePeers(peers); err != nil {
				return err
			}
			return serve(cmd.Context(), &c, log, cfg, func(addr string) {
				fmt.Fprintf(cmd.OutOrStdout(), "gpuledger node %s serving on %s\n", cfg.Name, addr)
			})
		},
	}
	c.flags(cmd, "gpuledger-data")
	cmd.Flags().StringVar(&genesis, "genesis", "", "genesis file (protojson); required on first start")
	cmd.Flags().StringVar(&nodeKey, "node-key", "", "node key file (signed-note private key, mode 0600)")
	cmd.Flags().StringVar(&peers, "peers", "", "found a cluster of these nodes: name=host:port,... (every founder, this node too, the same list on each)")
	cmd.Flags().StringVar(&join, "join", "", "join the running cluster that has a member at host:port")
	cmd.Flags().StringVar(&advertise, "advertise", "", "address peers and clients reach this node at (default: --listen)")
	cmd.Flags().DurationVar(&applyDelay, "test-apply-delay", 0, "as a follower, wait this long before applying each batch (tests of reads across nodes)")
	cmd.Flags().MarkHidden("test-apply-delay")
	cmd.Flags().IntVar(&withhold, "test-withhold-last", 0, "serve every serial's history without its last N entries (tests of clients that must catch a withholding node)")
	cmd.Flags().MarkHidden("test-withhold-last")
	cmd.Flags().Int64Var(&staleMap, "test-stale-map-size", -1, "sign every checkpoint with the serial map of log size N (tests of auditors that must catch an old map beside a new log)")
	cmd.Flags().MarkHidden("test-stale-map-size")
	cmd.MarkFlagsMutuallyExclusive("peers", "join")
	return cmd
}

// parsePeers parses name=host:port,name=host:port.
func parsePeers(s string) ([]node.Peer, error) {
	if s == "" {
		return nil, nil
	}
	var out []node.Peer
	for _, p := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
		if _, _, err := net.SplitHostPort(addr); !ok || name == "" || err != nil {
			return nil, fmt.Errorf("--peers: %q is not name=host:port (for example node-1=127.0.0.1:7601)", p)
		}
		out = append(out, node.Peer{Name: name, Addr: addr})
	}
	return out, nil
}

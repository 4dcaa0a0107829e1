package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/policy"
	"github.com/gpuledger/gpuledger/node"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/spf13/cobra"
)

func devCmd() *cobra.Command {
	var c common
	var policyFile string
	var nodes int
	var plaintext bool
	cmd := &cobra.Command{
		Use:   "dev [--data DIR] [--listen ADDR] [--nodes N]",
		Short: "run a development node with a development consortium",
		Long: `dev runs a single development node. On first start it creates, in --data,
a development consortium: keys for a manufacturer, two distributors, an
integrator, two datacentres in different countries, an auditor and a
regulator (DIR/keys/<participant>.key, mode 0600, and .pub), a node key
(DIR/node.key) and a genesis (DIR/genesis.json). Later starts reuse them.
It prints where the keys are and commands to try. --policy FILE gives a new
consortium's genesis another export policy than the embedded default.

The node serves TLS, as every node of a real consortium does, with
certificates from a local CA made for the development consortium:
DIR/tls/ca.pem (give it to clients: gpuledger --cacert, or GPULEDGER_CACERT;
grpcurl -cacert), DIR/tls/<node>.pem, and client certificates over each
participant's key in DIR/tls/clients/ (grpcurl -cert/-key). --plaintext
serves plaintext instead, on loopback only, for tools without TLS.

--nodes N (2 to 8) creates a development consortium whose genesis lists N
nodes, each operated by another organisation (DIR/node-<i>.key), prints the
"gpuledgerd serve" command that starts each node of the cluster on loopback,
and exits; "make cluster" runs them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := c.logger()
			if err != nil {
				return err
			}
			var pol *pb.Policy
			if policyFile != "" {
				b, err := os.ReadFile(policyFile)
				if err != nil {
					return fmt.Errorf("--policy: %w", err)
				}
				if pol, err = policy.Parse(b); err != nil {
					return fmt.Errorf("--policy %s: %w", policyFile, err)
				}
			}
			if nodes < 1 || nodes > len(devOperators) {
				return fmt.Errorf("--nodes %d: want 1 to %d", nodes, len(devOperators))
			}
			created, err := ensureDevConsortium(c.data, pol, nodes)
			if err != nil {
				return err
			}
			names := []string{"node"}
			if nodes > 1 {
				names = names[:0]
				for i := range nodes {
					names = append(names, devNodeName(i))
				}
			}
			if err := ensureDevTLS(c.data, names); err != nil {
				return fmt.Errorf("development TLS certificates in %s: %w", c.data, err)
			}
			if nodes > 1 {
				return printClusterCommands(cmd.OutOrStdout(), c.data, nodes, created)
			}
			if _, err := os.Stat(filepath.Join(c.data, "node.key")); err != nil {
				return fmt.Errorf("%s holds a development consortium of several nodes (node-<i>.key): \"gpuledgerd dev --data %s --nodes N\" prints the command that starts each, or use make cluster", c.data, c.data)
			}
			genesis, err := os.ReadFile(filepath.Join(c.data, "genesis.json"))
			if err != nil {
				return err
			}
			signer, err := readNodeKey(filepath.Join(c.data, "node.key"))
			if err != nil {
				return err
			}
			cfg := node.DefaultConfig(signer.Name(), filepath.Join(c.data, "node"))
			cfg.Genesis, cfg.NodeSigner = genesis, signer
			if plaintext && (c.tlsCert != "" || c.tlsKey != "") {
				return errors.New("--plaintext and --tls-cert/--tls-key: give one or the other")
			}
			if !plaintext && c.tlsCert == "" && c.tlsKey == "" {
				c.tlsCert, c.tlsKey = filepath.Join(c.data, "tls", "node.pem"), filepath.Join(c.data, "tls", "node.key")
			}
			return serve(cmd.Context(), &c, log, cfg, func(addr string) {
				printDevBanner(cmd.OutOrStdout(), c.data, addr, genesis, created, !plaintext)
			})
		},
	}
	c.flags(cmd, ".gpuledger-dev")
	cmd.Flags().StringVar(&policyFile, "policy", "", "export policy (protojson gpuledger.v1.Policy) for a new development consortium; default: the embedded one")
	cmd.Flags().BoolVar(&plaintext, "plaintext", false, "serve plaintext gRPC (loopback only) instead of TLS with the development CA")
	cmd.Flags().IntVar(&nodes, "nodes", 1, "nodes in a new development consortium; above 1, create it, print each node's serve command and exit")
	return cmd
}

// devOperators operate the development consortium's nodes, in order: each
// node is another organisation's.
var devOperators = []string{"export-regulator", "acme-gpu", "eu-dist", "dc-frankfurt", "dc-virginia", "us-dist", "rack-integrator", "audit-office"}

// DevClusterBase is the first port of a development cluster's nodes.
const DevClusterBase = 7601

func devNodeName(i int) string { return fmt.Sprintf("node-%d", i+1) }

func printClusterCommands(w io.Writer, dir string, nodes int, created bool) error {
	g, err := os.ReadFile(filepath.Join(dir, "genesis.json"))
	if err != nil {
		return err
	}
	parsed, err := ledger.ParseGenesis(g)
	if err != nil {
		return err
	}
	if len(parsed.GetNodes()) != nodes {
		return fmt.Errorf("%s holds a development consortium of %d nodes, not %d; use another --data", dir, len(parsed.GetNodes()), nodes)
	}
	var peers []string
	for i := range nodes {
		peers = append(peers, fmt.Sprintf("%s=127.0.0.1:%d", devNodeName(i), DevClusterBase+i))
	}
	what := "reusing the development consortium in"
	if created {
		what = "created a development consortium in"
	}
	fmt.Fprintf(w, "# %s %s: %d nodes, each another organisation's\n", what, dir, nodes)
	for i, nd := range parsed.GetNodes() {
		fmt.Fprintf(w, "# %s operated by %s\n", nd.GetName(), nd.GetParticipantId())
		fmt.Fprintf(w, "gpuledgerd serve --data %[1]s/%[2]s --genesis %[1]s/genesis.json --node-key %[1]s/%[2]s.key --tls-cert %[1]s/tls/%[2]s.pem --tls-key %[1]s/tls/%[2]s.key --listen 127.0.0.1:%[3]d --peers %[4]s\n",
			dir, nd.GetName(), DevClusterBase+i, strings.Join(peers, ","))
	}
	return nil
}

// ensureDevConsortium creates the development consortium in dir unless it
// exists, and reports whether it created it.
func ensureDevConsortium(dir string, pol *pb.Policy, nodes int) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "genesis.json")); err == nil {
		if pol != nil {
			return false, fmt.Errorf("--policy applies to a new consortium, and %s holds one already (its genesis fixes the policy; a regulator changes it with a signed registry entry); use a fresh --data", dir)
		}
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	o := consortium.Options{NodeOperator: devOperators[0], Policy: pol}
	for i := 1; i < nodes; i++ {
		o.MoreNodes = append(o.MoreNodes, consortium.NodeSpec{Name: devNodeName(i), Operator: devOperators[i]})
	}
	c, err := consortium.Build(consortium.Dev(), o)
	if err != nil {
		return false, err
	}
	keysDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		return false, fmt.Errorf("create %s: %w", keysDir, err)
	}
	for _, m := range c.Members {
		id := m.Participant.GetId()
		if err := m.Keys.WriteFile(filepath.Join(keysDir, id+".key")); err != nil {
			return false, err
		}
		var pubs []string
		for _, pk := range m.Keys.PublicKeys() {
			pubs = append(pubs, pk.String())
		}
		if err := os.WriteFile(filepath.Join(keysDir, id+".pub"), []byte(strings.Join(pubs, "\n")+"\n"), 0o644); err != nil {
			return false, err
		}
	}
	for _, nk := range c.Nodes {
		name := "node"
		if nodes > 1 {
			name = nk.Name
		}
		if err := writeExclusive(filepath.Join(dir, name+".key"), []byte(nk.Key+"\n"), 0o600); err != nil {
			return false, err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pub"), []byte(nk.VerifierKey+"\n"), 0o644); err != nil {
			return false, err
		}
	}
	// The genesis last: its presence means the consortium is complete.
	if err := os.WriteFile(filepath.Join(dir, "genesis.json"), c.Genesis, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

func writeExclusive(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func printDevBanner(w io.Writer, dir, addr string, genesis []byte, created, tls bool) {
	id := sha256.Sum256(genesis)
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	what := "reusing the development consortium in"
	if created {
		what = "created a development consortium in"
	}
	transport, cli, curl := "TLS, development CA "+abs+"/tls/ca.pem", "GPULEDGER_CACERT="+abs+"/tls/ca.pem ", "-cacert "+abs+"/tls/ca.pem"
	if !tls {
		transport, cli, curl = "PLAINTEXT, loopback only", "", "-plaintext"
	}
	fmt.Fprintf(w, `gpuledger development node serving on %[1]s (%[2]s %[3]s)
  transport   %[5]s
  ledger id   %[4]s
  genesis     %[3]s/genesis.json
  keys        %[3]s/keys/<participant>.key: acme-gpu (manufacturer), eu-dist, us-dist,
              rack-integrator, dc-frankfurt, dc-virginia (hybrid keys), audit-office,
              export-regulator

Try:
  %[6]sgpuledger --node %[1]s submit manufacture --key %[3]s/keys/acme-gpu.key --serial GPU-0001 --model H100-SXM5-80GB
  %[6]sgpuledger --node %[1]s serial GPU-0001
  %[6]sgpuledger --node %[1]s verify --genesis %[3]s/genesis.json GPU-0001
  grpcurl %[7]s %[1]s list
  grpcurl %[7]s -d '{"serial":"GPU-0001"}' %[1]s gpuledger.v1.LedgerService/GetSerial
`, addr, what, abs, hex.EncodeToString(id[:]), transport, cli, curl)
}

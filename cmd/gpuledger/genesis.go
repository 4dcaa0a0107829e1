package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func genesisCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "genesis",
		Short: "create and edit a genesis file",
		Long: `genesis builds the founding document of a ledger: the participants with their
roles, countries, sites and public keys, and the nodes whose checkpoint
signatures count. The SHA-256 of the final file is the ledger id; every node
must start from the same bytes.`,
	}
	var out, name string
	create := &cobra.Command{
		Use:   "create --out FILE [--name NAME]",
		Short: "write an empty genesis file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists; refusing to overwrite a genesis", out)
			}
			return writeGenesis(out, &pb.Genesis{LedgerName: name, CreatedAt: timestamppb.New(time.Now().UTC().Truncate(time.Second))})
		},
	}
	create.Flags().StringVar(&out, "out", "", "genesis file to create")
	create.Flags().StringVar(&name, "name", "gpuledger", "ledger name, for people")

	var file, id, display, role, country, pubFile string
	var sites []string
	var hybrid bool
	add := &cobra.Command{
		Use:   "add-participant --genesis FILE --id ID --role ROLE --country CC --pub FILE.pub [--site ID:CC[:LAT,LNG]]...",
		Short: "add a participant to a genesis file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := readGenesis(file)
			if err != nil {
				return err
			}
			p, err := participantFromFlags(id, display, role, country, pubFile, sites, hybrid)
			if err != nil {
				return err
			}
			g.Participants = append(g.Participants, p)
			return writeGenesis(file, g)
		},
	}
	add.Flags().StringVar(&file, "genesis", "genesis.json", "genesis file to edit")
	add.Flags().StringVar(&id, "id", "", "participant id: [a-z0-9][a-z0-9-]{1,62}")
	add.Flags().StringVar(&display, "name", "", "display name")
	add.Flags().StringVar(&role, "role", "", "manufacturer, distributor, integrator, datacentre, auditor or regulator")
	add.Flags().StringVar(&country, "country", "", "ISO 3166-1 alpha-2 country of registration")
	add.Flags().StringArrayVar(&sites, "site", nil, "a site as ID:CC or ID:CC:LAT,LNG (repeatable)")
	add.Flags().StringVar(&pubFile, "pub", "", "public key file written by keygen (FILE.pub)")
	add.Flags().BoolVar(&hybrid, "hybrid", false, "require both an Ed25519 and an ML-DSA-65 signature")

	var nodeName, operator, vkey string
	addNode := &cobra.Command{
		Use:   "add-node --genesis FILE --name NAME --participant ID --verifier-key KEY",
		Short: "add a checkpoint-signing node to a genesis file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := readGenesis(file)
			if err != nil {
				return err
			}
			if vkey, err = readVerifierKey(vkey); err != nil {
				return err
			}
			g.Nodes = append(g.Nodes, &pb.Node{Name: nodeName, ParticipantId: operator, VerifierKey: vkey})
			return writeGenesis(file, g)
		},
	}
	addNode.Flags().StringVar(&file, "genesis", "genesis.json", "genesis file to edit")
	addNode.Flags().StringVar(&nodeName, "name", "", "node name (the name in its note key)")
	addNode.Flags().StringVar(&operator, "participant", "", "participant that operates the node")
	addNode.Flags().StringVar(&vkey, "verifier-key", "", "node verifier key, or a file holding it")

	check := &cobra.Command{
		Use:   "check FILE",
		Short: "check a genesis file and print its ledger id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			g, err := ledger.ParseGenesis(b)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "%s: %d participants, %d nodes; ledger id %x\n", args[0], len(g.GetParticipants()), len(g.GetNodes()), sha256Sum(b))
			return nil
		},
	}
	cmd.AddCommand(create, add, addNode, check)
	return cmd
}

func readGenesis(path string) (*pb.Genesis, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read genesis: %w", err)
	}
	g := new(pb.Genesis)
	if err := protojson.Unmarshal(b, g); err != nil {
		return nil, fmt.Errorf("genesis %s: %w", path, err)
	}
	return g, nil
}

func writeGenesis(path string, g *pb.Genesis) error {
	b, err := consortium.MarshalGenesis(g)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readPublicKeys(path string) ([]keys.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []keys.PublicKey
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			pk, err := keys.ParsePublicKey(line)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			out = append(out, pk)
		}
	}
	return out, sc.Err()
}

// participantFromFlags builds a participant from add-participant's flags
// (genesis and registry alike), checking role, country and sites.
func participantFromFlags(id, display, role, country, pubFile string, sites []string, hybrid bool) (*pb.Participant, error) {
	if !custody.ValidParticipantID(id) {
		return nil, fmt.Errorf("--id %q: want [a-z0-9][a-z0-9-]{1,62}", id)
	}
	r, ok := pb.Role_value["ROLE_"+strings.ToUpper(role)]
	if !ok || r == 0 {
		return nil, fmt.Errorf("--role %q: want manufacturer, distributor, integrator, datacentre, auditor or regulator", role)
	}
	if err := custody.CheckCountry("--country", strings.ToUpper(country)); err != nil {
		return nil, err
	}
	p := &pb.Participant{Id: id, DisplayName: display, Role: pb.Role(r), Country: strings.ToUpper(country), RequireHybrid: hybrid}
	for _, s := range sites {
		site, err := parseSite(s)
		if err != nil {
			return nil, err
		}
		p.Sites = append(p.Sites, site)
	}
	if pubFile != "" {
		pks, err := readPublicKeys(pubFile)
		if err != nil {
			return nil, err
		}
		for _, pk := range pks {
			p.Keys = append(p.Keys, consortium.PublicKeyProto(pk))
		}
	}
	return p, nil
}

// parseSite reads ID:CC or ID:CC:LAT,LNG (degrees).
func parseSite(s string) (*pb.Site, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) < 2 {
		return nil, fmt.Errorf("--site %q: want ID:CC or ID:CC:LAT,LNG", s)
	}
	site := &pb.Site{Id: parts[0], Country: strings.ToUpper(parts[1])}
	if err := custody.CheckCountry("--site "+parts[0]+" country", site.Country); err != nil {
		return nil, err
	}
	if len(parts) == 3 {
		lat, lng, ok := strings.Cut(parts[2], ",")
		la, err1 := strconv.ParseFloat(lat, 64)
		ln, err2 := strconv.ParseFloat(lng, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--site %q: coordinates must be LAT,LNG in degrees", s)
		}
		a, b := int32(la*1e6), int32(ln*1e6)
		site.LatitudeE6, site.LongitudeE6 = &a, &b
	}
	return site, nil
}

package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
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
			return c.writeCheckedGenesis(file, g, fmt.Sprintf("added participant %s (%s, %s) with %s and %s", p.GetId(),
				trimEnum(p.GetRole().String(), "ROLE_"), p.GetCountry(), plural(len(p.GetKeys()), "key"), plural(len(p.GetSites()), "site")))
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
			return c.writeCheckedGenesis(file, g, fmt.Sprintf("added node %s, operated by %s", nodeName, operator))
		},
	}
	addNode.Flags().StringVar(&file, "genesis", "genesis.json", "genesis file to edit")
	addNode.Flags().StringVar(&nodeName, "name", "", "node name (the name in its note key)")
	addNode.Flags().StringVar(&operator, "participant", "", "participant that operates the node")
	addNode.Flags().StringVar(&vkey, "verifier-key", "", "node verifier key, or a file holding it")

	check := &cobra.Command{
		Use:   "check FILE",
		Short: "check a genesis file and print its ledger id",
		Args:  needArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			g, err := ledger.ParseGenesis(b)
			if err != nil {
				return err
			}
			id := sha256Sum(b)
			regulators := 0
			for _, p := range g.GetParticipants() {
				if p.GetRole() == pb.Role_ROLE_REGULATOR {
					regulators++
				}
			}
			k := max(g.GetRegistryQuorum(), 1)
			return c.result(fmt.Sprintf("%s: %s, %s; registry changes need %d of %d regulators; ledger id %x\n", args[0], plural(len(g.GetParticipants()), "participant"), plural(len(g.GetNodes()), "node"), k, regulators, id),
				map[string]any{"file": args[0], "participants": len(g.GetParticipants()), "nodes": len(g.GetNodes()), "ledgerId": hex.EncodeToString(id[:]),
					"registryQuorum": k, "regulators": regulators})
		},
	}
	var quorum uint32
	setQuorum := &cobra.Command{
		Use:   "set-quorum --genesis FILE --regulators K",
		Short: "require K distinct regulators' signatures on every registry change",
		Long: `set-quorum sets how many distinct REGULATOR participants must sign every
registry change of the ledger (k of its n regulators; 1 by default). With
k > 1 no single regulator's key can add a key to a participant, suspend one
or change the policy alone. K may not exceed the regulators in the genesis,
and no later change may leave fewer than K regulators able to sign.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if quorum < 1 {
				return fmt.Errorf("--regulators %d: want 1 or more", quorum)
			}
			g, err := readGenesis(file)
			if err != nil {
				return err
			}
			g.RegistryQuorum = quorum
			return c.writeCheckedGenesis(file, g, fmt.Sprintf("registry quorum set to %d", quorum))
		},
	}
	setQuorum.Flags().StringVar(&file, "genesis", "genesis.json", "genesis file to edit")
	setQuorum.Flags().Uint32Var(&quorum, "regulators", 1, "how many regulators must sign each registry change")

	var removeID string
	removeParticipant := &cobra.Command{
		Use:   "remove-participant --genesis FILE --id ID",
		Short: "remove a participant from a genesis file (not one that operates a node)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := readGenesis(file)
			if err != nil {
				return err
			}
			for _, n := range g.GetNodes() {
				if n.GetParticipantId() == removeID {
					return fmt.Errorf("%s operates node %s; remove the node first (genesis remove-node --name %s)", removeID, n.GetName(), n.GetName())
				}
			}
			before := len(g.GetParticipants())
			g.Participants = slices.DeleteFunc(g.Participants, func(p *pb.Participant) bool { return p.GetId() == removeID })
			if len(g.GetParticipants()) == before {
				return fmt.Errorf("%s has no participant %q", file, removeID)
			}
			return c.writeCheckedGenesis(file, g, "removed participant "+removeID)
		},
	}
	removeParticipant.Flags().StringVar(&file, "genesis", "genesis.json", "genesis file to edit")
	removeParticipant.Flags().StringVar(&removeID, "id", "", "the participant to remove")
	removeNode := &cobra.Command{
		Use:   "remove-node --genesis FILE --name NAME",
		Short: "remove a node from a genesis file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := readGenesis(file)
			if err != nil {
				return err
			}
			before := len(g.GetNodes())
			g.Nodes = slices.DeleteFunc(g.Nodes, func(n *pb.Node) bool { return n.GetName() == removeID })
			if len(g.GetNodes()) == before {
				return fmt.Errorf("%s has no node %q", file, removeID)
			}
			return c.writeCheckedGenesis(file, g, "removed node "+removeID)
		},
	}
	removeNode.Flags().StringVar(&file, "genesis", "genesis.json", "genesis file to edit")
	removeNode.Flags().StringVar(&removeID, "name", "", "the node to remove")
	cmd.AddCommand(create, add, addNode, setQuorum, removeParticipant, removeNode, check)
	return cmd
}

// writeCheckedGenesis runs genesis check's checks on g (all but the need for
// a REGULATOR, which a draft may still lack), then writes it and says what
// changed. Nothing is written when a check fails.
func (c *cli) writeCheckedGenesis(path string, g *pb.Genesis, what string) error {
	b, err := consortium.MarshalGenesis(g)
	if err != nil {
		return err
	}
	_, err = ledger.ParseGenesis(b)
	noRegulator := errors.Is(err, ledger.ErrNoRegulator)
	if err != nil && !noRegulator {
		return fmt.Errorf("%s not changed: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	text := fmt.Sprintf("%s in %s: now %s and %s\n", what, path, plural(len(g.GetParticipants()), "participant"), plural(len(g.GetNodes()), "node"))
	if noRegulator {
		text += "  no REGULATOR yet: add one before a node can start from this genesis\n"
	}
	return c.result(text, map[string]any{"changed": what, "file": path, "participants": len(g.GetParticipants()), "nodes": len(g.GetNodes()),
		"regulator": !noRegulator})
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

// parseMicroDegrees reads decimal degrees ("50.110", "-0.522654") exactly,
// as integer micro-degrees: no float rounding, at most six decimals.
func parseMicroDegrees(s string, limit int64) (int32, error) {
	neg := strings.HasPrefix(s, "-")
	whole, frac, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	if whole == "" || len(frac) > 6 || strings.ContainsAny(whole+frac, "+-") {
		return 0, fmt.Errorf("%q is not decimal degrees with at most 6 decimals", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not decimal degrees", s)
	}
	var f int64
	if frac != "" {
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64); err != nil {
			return 0, fmt.Errorf("%q is not decimal degrees", s)
		}
	}
	v := w*1_000_000 + f
	if v > limit*1_000_000 {
		return 0, fmt.Errorf("%q is beyond ±%d degrees", s, limit)
	}
	if neg {
		v = -v
	}
	return int32(v), nil
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
		la, err1 := parseMicroDegrees(lat, 90)
		ln, err2 := parseMicroDegrees(lng, 180)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--site %q: coordinates must be LAT,LNG in decimal degrees with at most 6 decimals, within ±90 and ±180 (%v)", s, errors.Join(err1, err2))
		}
		site.LatitudeE6, site.LongitudeE6 = &la, &ln
	}
	return site, nil
}

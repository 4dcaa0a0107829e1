package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/policy"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// registryFlags are the flags every registry change takes.
type registryFlags struct {
	keys        []string
	reason, out string
	dryRun      bool
}

func (f *registryFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.keys, "key", nil, "a REGULATOR's private key file (required); repeat it for each regulator that signs (the first is the change's actor), and for add-key give the receiving participant's key too, as its consent")
	cmd.Flags().StringVar(&f.reason, "reason", "", "why, for the record (a decision reference, a ticket)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "show the change and submit nothing")
	cmd.Flags().StringVar(&f.out, "out", "", "write the signed change to FILE (JSON Lines of envelopes) instead of submitting it, for other regulators to cosign (registry cosign) and then submit (registry submit)")
}

func registryCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "change the registry of a running ledger (regulators)",
		Long: `registry signs a registry change with a REGULATOR's key and submits it: a new
participant, a key added to or revoked from a participant, a suspension, a new
policy, or a checkpoint-signing node. Each change takes effect from the entry
after its own and is verifiable like any other entry. Every subcommand prints
what it will change first; --dry-run stops there.

Where the genesis sets a registry quorum of k regulators, every change needs
the signatures of k of them. Give --key once for each regulator at hand, or
write the change signed by one (--out FILE), have the others add their
signatures ("gpuledger registry cosign FILE --key THEIRS.key") and submit it
("gpuledger registry submit FILE"). A key added to a participant without that
participant's own signature on the change (its key as another --key, or a
cosign) is flagged KEY_ADDED_BY_REGULATOR. No change may leave fewer
regulators able to sign than the quorum.

Read the registry with "gpuledger participants" and "gpuledger policy".`,
	}
	cmd.AddCommand(registryAddParticipantCmd(c), registryAddKeyCmd(c), registryRevokeKeyCmd(c),
		registrySuspendCmd(c), registryUnsuspendCmd(c), registrySetPolicyCmd(c), registryAddNodeCmd(c),
		registryCosignCmd(c), registrySubmitCmd(c))
	return cmd
}

// readKeySets reads each key file; the first must name a participant (the
// change's actor).
func readKeySets(files []string) ([]*keys.KeySet, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("--key is required: a REGULATOR's private key file")
	}
	var out []*keys.KeySet
	for _, f := range files {
		ks, err := keys.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if ks.Participant == "" {
			return nil, fmt.Errorf("key file %s names no participant; make keys with gpuledger keygen --participant ID", f)
		}
		out = append(out, ks)
	}
	return out, nil
}

// readEnvelopes reads a JSON Lines file of envelopes (registry change --out).
func readEnvelopes(path string) ([]*pb.Envelope, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*pb.Envelope
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		env := new(pb.Envelope)
		if err := protojson.Unmarshal([]byte(line), env); err != nil {
			return nil, fmt.Errorf("%s line %d: not an envelope in JSON: %v", path, i+1, err)
		}
		if env.GetPayloadType() != dsse.RegistryChangeType {
			return nil, fmt.Errorf("%s line %d: payload type %s is not a registry change", path, i+1, custody.Quote(env.GetPayloadType()))
		}
		out = append(out, env)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no envelope", path)
	}
	return out, nil
}

func writeEnvelopes(path string, envs []*pb.Envelope) error {
	var b []byte
	for _, env := range envs {
		line, err := protojson.Marshal(env)
		if err != nil {
			return err
		}
		b = append(append(b, line...), '\n')
	}
	return os.WriteFile(path, b, 0o644)
}

// describeChange says what a signed registry change does, and who signed it.
func describeChange(env *pb.Envelope) (string, error) {
	ch := new(pb.RegistryChange)
	if err := proto.Unmarshal(env.GetPayload(), ch); err != nil {
		return "", fmt.Errorf("the envelope's payload is not a registry change: %v", err)
	}
	what, _ := protojson.Marshal(ch)
	return fmt.Sprintf("%s, now with %s", what, plural(len(env.GetSignatures()), "signature")), nil
}

func registryCosignCmd(c *cli) *cobra.Command {
	var keyFiles []string
	var out string
	cmd := &cobra.Command{
		Use:   "cosign FILE --key REGULATOR.key [--out FILE]",
		Short: "add your signatures to registry changes another regulator wrote with --out",
		Long: `cosign reads the signed registry changes in FILE (written by a registry
subcommand's --out), shows what each does and who has signed it, adds the
signatures of every --key to each (the same payload, signed again) and writes
them back to FILE, or to --out. It does not contact the node: submit with
"gpuledger registry submit FILE" once enough regulators have signed.`,
		Args: needArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sets, err := readKeySets(keyFiles)
			if err != nil {
				return err
			}
			envs, err := readEnvelopes(args[0])
			if err != nil {
				return err
			}
			for _, env := range envs {
				pae := dsse.PAE(env.GetPayloadType(), env.GetPayload())
				for _, ks := range sets {
					for _, s := range ks.Signers() {
						for _, have := range env.GetSignatures() {
							if have.GetKeyid() == s.KeyID() {
								return fmt.Errorf("%s: key %s of %s has signed this change already", args[0], s.KeyID(), ks.Participant)
							}
						}
						env.Signatures = append(env.Signatures, &pb.Signature{Keyid: s.KeyID(), Sig: s.Sign(pae)})
					}
				}
				what, err := describeChange(env)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.errOut, "cosigned %s\n", what)
			}
			if out == "" {
				out = args[0]
			}
			return writeEnvelopes(out, envs)
		},
	}
	cmd.Flags().StringArrayVar(&keyFiles, "key", nil, "your private key file (repeatable)")
	cmd.Flags().StringVar(&out, "out", "", "write here instead of back to FILE")
	return cmd
}

func registrySubmitCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "submit FILE",
		Short: "submit signed registry changes (written with --out, cosigned with cosign)",
		Args:  needArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			envs, err := readEnvelopes(args[0])
			if err != nil {
				return err
			}
			return c.submitChanges(cmd.Context(), envs)
		},
	}
}

// submitChanges appends signed registry changes in order and prints each
// receipt.
func (c *cli) submitChanges(ctx context.Context, envs []*pb.Envelope) error {
	for _, env := range envs {
		var r *pb.AppendResponse
		if err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
			r, err = gpuledgerv1grpc.NewLedgerServiceClient(conn).Append(ctx, &pb.AppendRequest{Envelope: env})
			return err
		}); err != nil {
			return err
		}
		if err := c.checkReceipts(ctx, []*pb.Envelope{env}, []*pb.Receipt{r.GetReceipt()}); err != nil {
			return err
		}
		c.saw(ctx, r.GetReceipt())
		if err := c.printReceipt(r.GetReceipt()); err != nil {
			return err
		}
	}
	return nil
}

// change says what it will do, then (unless --dry-run) signs the changes
// with the regulator's key, submits them in order and prints the receipts.
func (c *cli) change(ctx context.Context, f *registryFlags, what string, changes ...func(*pb.RegistryChange)) error {
	sets, err := readKeySets(f.keys)
	if err != nil {
		return err
	}
	ks := sets[0]
	c.as = ks
	var signers []keys.Signer
	var names []string
	for _, s := range sets {
		signers = append(signers, s.Signers()...)
		if !slices.Contains(names, s.Participant) {
			names = append(names, s.Participant)
		}
	}
	verb := "will"
	if f.dryRun {
		verb = "would"
	}
	fmt.Fprintf(c.errOut, "%s %s %s\n", strings.Join(names, " and "), verb, what)
	if f.dryRun {
		return nil
	}
	now := time.Now().UTC()
	id, err := c.ledgerID(ctx)
	if err != nil {
		return err
	}
	var envs []*pb.Envelope
	for _, set := range changes {
		ch := &pb.RegistryChange{LedgerId: id, Actor: ks.Participant, OccurredAt: timestamppb.New(now), Reason: f.reason}
		set(ch)
		env, err := dsse.SignMessage(dsse.RegistryChangeType, ch, signers...)
		if err != nil {
			return err
		}
		envs = append(envs, env)
	}
	if f.out != "" {
		if err := writeEnvelopes(f.out, envs); err != nil {
			return err
		}
		fmt.Fprintf(c.errOut, "wrote %s to %s, signed by %s: other regulators add theirs with \"gpuledger registry cosign %s --key THEIRS.key\", then \"gpuledger registry submit %s\"\n",
			plural(len(envs), "signed change"), f.out, strings.Join(names, " and "), f.out, f.out)
		return nil
	}
	return c.submitChanges(ctx, envs)
}

func registryAddParticipantCmd(c *cli) *cobra.Command {
	var rf registryFlags
	var id, display, role, country, pubFile string
	var sites []string
	var hybrid bool
	cmd := &cobra.Command{
		Use:   "add-participant --key REGULATOR.key --id ID --role ROLE --country CC --pub FILE.pub [--site ID:CC[:LAT,LNG]]... [--hybrid]",
		Short: "register a new participant with its keys and sites",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pubFile == "" && !strings.EqualFold(role, "auditor") {
				return fmt.Errorf("--pub FILE.pub is required: the participant's public keys (gpuledger keygen writes FILE.pub)")
			}
			p, err := participantFromFlags(id, display, role, country, pubFile, sites, hybrid)
			if err != nil {
				return err
			}
			what := fmt.Sprintf("add participant %s (%s, %s) with %s and %s", p.GetId(), trimEnum(p.GetRole().String(), "ROLE_"),
				p.GetCountry(), plural(len(p.GetKeys()), "key"), plural(len(p.GetSites()), "site"))
			return c.change(cmd.Context(), &rf, what, func(ch *pb.RegistryChange) {
				ch.Change = &pb.RegistryChange_AddParticipant{AddParticipant: p}
			})
		},
	}
	rf.add(cmd)
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "participant id: [a-z0-9][a-z0-9-]{1,62}")
	f.StringVar(&display, "name", "", "display name")
	f.StringVar(&role, "role", "", "manufacturer, distributor, integrator, datacentre, auditor or regulator")
	f.StringVar(&country, "country", "", "ISO 3166-1 alpha-2 country of registration")
	f.StringVar(&pubFile, "pub", "", "the participant's public key file (gpuledger keygen's FILE.pub)")
	f.StringArrayVar(&sites, "site", nil, "a site, ID:CC or ID:CC:LAT,LNG in degrees (repeatable)")
	f.BoolVar(&hybrid, "hybrid", false, "require both an Ed25519 and an ML-DSA-65 signature on everything it signs")
	return cmd
}

func registryAddKeyCmd(c *cli) *cobra.Command {
	var rf registryFlags
	var id, pubFile string
	cmd := &cobra.Command{
		Use:   "add-key --key REGULATOR.key --participant ID --pub FILE.pub",
		Short: "give a participant another key (every key in FILE.pub, one change each)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" || pubFile == "" {
				return fmt.Errorf("%s required", missing(map[string]string{"--participant": id, "--pub": pubFile}, "--participant", "--pub"))
			}
			pks, err := readPublicKeys(pubFile)
			if err != nil {
				return fmt.Errorf("--pub: %w", err)
			}
			var sets []func(*pb.RegistryChange)
			var ids []string
			for _, pk := range pks {
				k := consortium.PublicKeyProto(pk)
				ids = append(ids, pk.Scheme.Name()+" "+pk.ID())
				sets = append(sets, func(ch *pb.RegistryChange) {
					ch.Change = &pb.RegistryChange_AddKey{AddKey: &pb.AddKey{ParticipantId: id, Key: k}}
				})
			}
			return c.change(cmd.Context(), &rf, fmt.Sprintf("add to %s the %s %s", id, plural(len(pks), "key"), strings.Join(ids, ", ")), sets...)
		},
	}
	rf.add(cmd)
	cmd.Flags().StringVar(&id, "participant", "", "the participant that gets the key")
	cmd.Flags().StringVar(&pubFile, "pub", "", "public key file (gpuledger keygen's FILE.pub)")
	return cmd
}

func registryRevokeKeyCmd(c *cli) *cobra.Command {
	var rf registryFlags
	var id, keyID string
	cmd := &cobra.Command{
		Use:   "revoke-key --key REGULATOR.key --participant ID --key-id KEYID",
		Short: "revoke a participant's key: it may not sign from the next entry on",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" || keyID == "" {
				return fmt.Errorf("%s required", missing(map[string]string{"--participant": id, "--key-id": keyID}, "--participant", "--key-id"))
			}
			return c.change(cmd.Context(), &rf, fmt.Sprintf("revoke key %s of %s", keyID, id), func(ch *pb.RegistryChange) {
				ch.Change = &pb.RegistryChange_RevokeKey{RevokeKey: &pb.RevokeKey{ParticipantId: id, KeyId: keyID}}
			})
		},
	}
	rf.add(cmd)
	cmd.Flags().StringVar(&id, "participant", "", "the participant that holds the key")
	cmd.Flags().StringVar(&keyID, "key-id", "", "the key's id (gpuledger participants ID lists them)")
	return cmd
}

func registrySuspendCmd(c *cli) *cobra.Command {
	return participantChangeCmd(c, "suspend", "suspend a participant: none of its keys may sign from the next entry on",
		"the participant to suspend", func(id string) (string, func(*pb.RegistryChange)) {
			return "suspend " + id, func(ch *pb.RegistryChange) {
				ch.Change = &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: id}}
			}
		})
}

func registryUnsuspendCmd(c *cli) *cobra.Command {
	return participantChangeCmd(c, "unsuspend", "lift a participant's suspension: it may sign again from the next entry on",
		"the suspended participant", func(id string) (string, func(*pb.RegistryChange)) {
			return "lift the suspension of " + id, func(ch *pb.RegistryChange) {
				ch.Change = &pb.RegistryChange_UnsuspendParticipant{UnsuspendParticipant: &pb.UnsuspendParticipant{ParticipantId: id}}
			}
		})
}

// participantChangeCmd is a registry subcommand that changes one participant
// named by --participant: build says what it will do and sets the change.
func participantChangeCmd(c *cli, name, short, help string, build func(id string) (string, func(*pb.RegistryChange))) *cobra.Command {
	var rf registryFlags
	var id string
	cmd := &cobra.Command{
		Use:   name + " --key REGULATOR.key --participant ID",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" {
				return fmt.Errorf("--participant is required")
			}
			what, set := build(id)
			return c.change(cmd.Context(), &rf, what, set)
		},
	}
	rf.add(cmd)
	cmd.Flags().StringVar(&id, "participant", "", help)
	return cmd
}

func registrySetPolicyCmd(c *cli) *cobra.Command {
	var rf registryFlags
	var file string
	cmd := &cobra.Command{
		Use:   "set-policy --key REGULATOR.key --file POLICY.json",
		Short: "replace the export policy (its version must be greater than the one in force)",
		Long: `set-policy reads a protojson gpuledger.v1.Policy (gpuledger policy -o json
prints the one in force, to start from), checks it, shows how it differs from
the policy in force, and submits it. Findings arising from the next entry on
cite its version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return fmt.Errorf("--file POLICY.json is required")
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			p, err := policy.Parse(b)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			var cur *pb.GetPolicyResponse
			if err := c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				cur, err = gpuledgerv1grpc.NewRegistryServiceClient(conn).GetPolicy(ctx, &pb.GetPolicyRequest{})
				return err
			}); err != nil {
				return err
			}
			if p.GetVersion() <= cur.GetPolicy().GetVersion() {
				return fmt.Errorf("%s has version %d; the policy in force is version %d: give the new one a greater version", file, p.GetVersion(), cur.GetPolicy().GetVersion())
			}
			what := fmt.Sprintf("replace policy %d (%s) with %d (%s)%s", cur.GetPolicy().GetVersion(), cur.GetPolicy().GetName(),
				p.GetVersion(), p.GetName(), policyDiff(cur.GetPolicy(), p))
			return c.change(cmd.Context(), &rf, what, func(ch *pb.RegistryChange) {
				ch.Change = &pb.RegistryChange_SetPolicy{SetPolicy: p}
			})
		},
	}
	rf.add(cmd)
	cmd.Flags().StringVar(&file, "file", "", "the new policy, protojson gpuledger.v1.Policy")
	return cmd
}

// policyDiff lists the country classes that change between two policies.
func policyDiff(old, new *pb.Policy) string {
	classes := func(p *pb.Policy) map[string]pb.CountryClass {
		m := map[string]pb.CountryClass{}
		for _, r := range p.GetCountries() {
			m[r.GetCountry()] = r.GetClass()
		}
		return m
	}
	o, n := classes(old), classes(new)
	var lines []string
	for _, code := range sortedKeys(o, n) {
		if o[code] != n[code] {
			lines = append(lines, fmt.Sprintf("%s %s -> %s", code, className(o[code]), className(n[code])))
		}
	}
	if len(lines) == 0 {
		return "; no country changes class"
	}
	return ":\n  " + strings.Join(lines, "\n  ")
}

func className(k pb.CountryClass) string {
	if k == pb.CountryClass_COUNTRY_CLASS_UNSPECIFIED {
		return "none"
	}
	return trimEnum(k.String(), "COUNTRY_CLASS_")
}

func registryAddNodeCmd(c *cli) *cobra.Command {
	var rf registryFlags
	var name, operator, vkey string
	cmd := &cobra.Command{
		Use:   "add-node --key REGULATOR.key --name NAME --participant ID --verifier-key KEY",
		Short: "add a checkpoint-signing node to the registry, so that it may join the cluster",
		Long: `add-node signs, with a REGULATOR's key, a registry change that adds a node
(its name, the participant that operates it and its signed-note verifier key,
from "gpuledger nodekey") and submits it. From that entry on the node's
checkpoint signatures count, and "gpuledgerd serve --join" admits it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || operator == "" || vkey == "" {
				return fmt.Errorf("%s required", missing(map[string]string{"--name": name, "--participant": operator, "--verifier-key": vkey},
					"--name", "--participant", "--verifier-key"))
			}
			vk, err := readVerifierKey(vkey)
			if err != nil {
				return err
			}
			return c.change(cmd.Context(), &rf, fmt.Sprintf("add node %s, operated by %s", name, operator), func(ch *pb.RegistryChange) {
				ch.Change = &pb.RegistryChange_AddNode{AddNode: &pb.Node{Name: name, ParticipantId: operator, VerifierKey: vk}}
			})
		},
	}
	rf.add(cmd)
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "node name (the name in its note key)")
	f.StringVar(&operator, "participant", "", "participant that operates the node")
	f.StringVar(&vkey, "verifier-key", "", "node verifier key, or a file holding it (nodekey's FILE.pub)")
	return cmd
}

// missing names the flags among names whose values are empty: "--a is" or
// "--a and --b are".
func missing(values map[string]string, names ...string) string {
	var out []string
	for _, n := range names {
		if values[n] == "" {
			out = append(out, n)
		}
	}
	if len(out) == 1 {
		return out[0] + " is"
	}
	return strings.Join(out[:len(out)-1], ", ") + " and " + out[len(out)-1] + " are"
}

// readVerifierKey takes a signed-note verifier key, or a file holding one.
func readVerifierKey(s string) (string, error) {
	if b, err := os.ReadFile(s); err == nil {
		s = strings.TrimSpace(string(b))
	}
	if _, err := note.NewVerifier(s); err != nil {
		return "", fmt.Errorf("--verifier-key: %w (give the node's <name>+<hash>+<key> text or a file holding it)", err)
	}
	return s, nil
}

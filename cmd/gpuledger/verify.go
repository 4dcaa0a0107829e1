package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"google.golang.org/protobuf/encoding/protojson"
	"io"
	"os"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/schollz/progressbar/v3"

	"github.com/gpuledger/gpuledger/ledger/gaps"
	"github.com/gpuledger/gpuledger/verify"
	"github.com/spf13/cobra"
)

func verifyCmd(c *cli) *cobra.Command {
	var trustDir, passport string
	var all, failOnFindings bool
	var minSigners int
	cmd := &cobra.Command{
		Use:   "verify --genesis FILE (SERIAL | --all) | verify --passport FILE [--genesis FILE]",
		Short: "verify a GPU's custody chain on this machine, trusting only the genesis",
		Long: `verify checks a serial without trusting the node: the checkpoint must be signed
by a node key listed in the genesis, for this ledger; the registry is rebuilt
from the genesis and the log's registry-change entries, each verified; then
every entry of the serial must carry valid signatures by active keys of its
actor, link to the previous one from MANUFACTURED on, be included in the
checkpoint, and carry exactly the flags the custody rules give. It prints the
verdict, the serial's open findings (computed here from the verified entries
and the checkpoint's policy: every flag, and HANDOFF_UNCONFIRMED and SILENT
when their windows have run out) and the custody story. It exits 0 when the
chain holds, 1 when it does not, and with --fail-on-findings 3 when the chain
holds but findings are open.

verify keeps the last checkpoint it verified for each ledger in --trust-dir
and asks the node to prove (RFC 6962 consistency) that its new checkpoint
extends it: a node that shows a rewritten or forked history fails loudly,
with FORK.

The genesis is --genesis, else $GPULEDGER_GENESIS (a dev node's is
DIR/genesis.json).

verify --all checks the whole log instead: it streams every entry up to the
checkpoint, recomputes the Merkle root, re-verifies every signature on all
cores, rebuilds the registry and every serial's chain, and compares with the
checkpoint, with a progress bar; it names the first bad entry and exits 0
only when everything holds.

verify --passport FILE checks a custody passport (gpuledger passport) offline,
with no network: the checkpoint against the genesis in the passport (pinned
to --genesis when given), the registry entries, every entry, proof and link,
and prints the custody story.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if passport != "" {
				if len(args) > 0 || all {
					return fmt.Errorf("--passport takes no SERIAL and no --all")
				}
				return nil
			}
			if all != (len(args) == 0) || len(args) > 1 {
				return fmt.Errorf("give one SERIAL, or --all")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			genesis := c.genesis
			if genesis == "" {
				genesis = os.Getenv("GPULEDGER_GENESIS")
			}
			if passport != "" {
				return c.verifyPassport(passport, genesis, minSigners)
			}
			if genesis == "" {
				return fmt.Errorf("--genesis FILE is required: the genesis you trust (a dev node's is DIR/genesis.json)")
			}
			g, err := os.ReadFile(genesis)
			if err != nil {
				return fmt.Errorf("--genesis: %w", err)
			}
			v, err := verify.New(g)
			if err != nil {
				return err
			}
			v.MinSigners = minSigners
			conn, err := c.dial()
			if err != nil {
				return err
			}
			if all {
				return c.verifyAll(cmd.Context(), v, verify.NewClient(conn), &verify.TrustStore{Dir: trustDir})
			}
			ctx, cancel := c.ctx(cmd.Context())
			defer cancel()
			rep, err := v.Serial(ctx, verify.NewClient(conn), args[0], &verify.TrustStore{Dir: trustDir})
			if err != nil {
				var f *verify.Failure
				var fork *verify.ForkError
				if errors.As(err, &f) || errors.As(err, &fork) {
					return c.verdict(verdict{Serial: args[0], Error: err.Error()}, func() { fmt.Fprintf(c.out, "FAILED %s: %v\n", args[0], err) })
				}
				return err
			}
			open := rep.OpenFindings(time.Now())
			defer func() {
				if failOnFindings && len(open) > 0 && err == nil {
					err = exitCode(3)
				}
			}()
			if c.json() {
				vd := verdict{OK: true, Serial: rep.Serial, Entries: uint64(len(rep.Entries)), CheckpointSize: rep.Checkpoint.Size,
					Signers: rep.Checkpoint.Signers, Story: rep.Story(), FromEvent: rep.From, MapSize: rep.MapSize}
				if rep.Trusted != nil {
					vd.ConsistentWithSize = &rep.Trusted.Size
				}
				for _, f := range open {
					b, _ := protojson.Marshal(f)
					vd.OpenFindings = append(vd.OpenFindings, b)
				}
				return c.verdict(vd, nil)
			}
			fmt.Fprintf(c.out, "OK %s: chain intact; %s verified against checkpoint size %d signed by %v; %s\n",
				rep.Serial, plural(len(rep.Entries), "entry"), rep.Checkpoint.Size, rep.Checkpoint.Signers, plural(len(open), "open finding"))
			if rep.MapSize > 0 {
				fmt.Fprintf(c.out, "  nothing withheld: the serial map of the checkpoint of size %d commits %s to this head\n", rep.MapSize, rep.Serial)
			}
			if rep.From > 0 {
				fmt.Fprintf(c.out, "  from event %d on: the node serves this reader (read scope scoped) the history from where it became party; links, signatures and inclusion are verified from there, the %d events before and the custody rules over them are not\n", rep.From, rep.From)
			}
			for _, f := range open {
				fmt.Fprintf(c.out, "  finding %s %s: %s\n", trimEnum(f.GetSeverity().String(), "SEVERITY_"), gaps.Name(f.GetKind()), f.GetSummary())
			}
			if rep.Trusted != nil {
				fmt.Fprintf(c.out, "  the checkpoint extends the one verified before (size %d): consistency proved\n", rep.Trusted.Size)
			} else {
				fmt.Fprintf(c.out, "  first checkpoint of this ledger seen here; trusted from now on (%s)\n", trustDir)
			}
			for _, line := range rep.Story() {
				fmt.Fprintln(c.out, "  "+line)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "verify the whole log, not one serial")
	cmd.Flags().IntVar(&minSigners, "min-signers", 1, "require the checkpoint signed by nodes of K distinct organisations (the node gathers its peers' cosignatures)")
	cmd.Flags().StringVar(&passport, "passport", "", "verify a custody passport file offline")
	cmd.Flags().BoolVar(&failOnFindings, "fail-on-findings", false, "exit 3 when the chain holds but the serial has open findings")
	cmd.Flags().StringVar(&trustDir, "trust-dir", verify.DefaultTrustDir(), "where the last verified checkpoint of each ledger is kept (env GPULEDGER_TRUST_DIR)")
	return cmd
}

// verifyAll streams and verifies the whole log up to the node's checkpoint.
func (c *cli) verifyAll(ctx context.Context, v *verify.Verifier, client *verify.Client, store *verify.TrustStore) error {
	cp, trusted, err := v.LatestCheckpoint(ctx, client, store)
	if err != nil {
		var fork *verify.ForkError
		if errors.As(err, &fork) {
			fmt.Fprintf(c.out, "FAILED: %v\n", err)
			return errSilent
		}
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Ledger.StreamEntries(sctx, &pb.StreamEntriesRequest{})
	if err != nil {
		return err
	}
	barOut := io.Discard
	if interactive(c.errOut) {
		barOut = c.errOut
	}
	bar := progressbar.NewOptions64(int64(cp.Size), progressbar.OptionSetWriter(barOut), progressbar.OptionSetDescription("verifying"),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("entries"),
		progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
	start := time.Now()
	var seen uint64
	rep, err := v.All(ctx, func() (*pb.Entry, error) {
		if seen == cp.Size {
			return nil, nil // entries after the checkpoint are verified next time
		}
		m, err := stream.Recv()
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		seen++
		return m.GetEntry(), nil
	}, func(n uint64) { bar.Set64(int64(n)) })
	if err != nil {
		return err
	}
	bar.Finish()
	elapsed := time.Since(start)
	vd := verdict{Entries: rep.Entries, Serials: rep.Serials, RegistryChanges: rep.Registry, CheckpointSize: cp.Size, Signers: cp.Signers,
		Seconds: elapsed.Seconds(), EntriesPerSecond: float64(rep.Entries) / elapsed.Seconds()}
	if trusted != nil {
		vd.ConsistentWithSize = &trusted.Size
	}
	switch {
	case !rep.OK():
		vd.Error = fmt.Sprintf("entry %d: %s (%d problems)", rep.First(), rep.FirstProblem(), len(rep.Failures))
	case rep.Entries != cp.Size:
		vd.Error = fmt.Sprintf("the node streamed %d entries; its checkpoint commits to %d", rep.Entries, cp.Size)
	case rep.Root != cp.Root:
		vd.Error = fmt.Sprintf("the entries hash to root %x; the signed checkpoint says %x", rep.Root[:], cp.Root[:])
	default:
		vd.OK = true
	}
	return c.verdict(vd, func() {
		if !vd.OK {
			fmt.Fprintf(c.out, "FAILED: %s\n", vd.Error)
			return
		}
		fmt.Fprintf(c.out, "OK: %s (%s, %s) verified against checkpoint size %d signed by %v in %v (%.0f entries/s)\n",
			plural(int(rep.Entries), "entry"), plural(rep.Serials, "serial"), plural(rep.Registry, "registry change"), cp.Size, cp.Signers,
			elapsed.Round(time.Millisecond), vd.EntriesPerSecond)
		if trusted != nil {
			fmt.Fprintf(c.out, "  the checkpoint extends the one verified before (size %d): consistency proved\n", trusted.Size)
		}
	})
}

// verdict is what verify prints with -o json: one object, ok or not.
type verdict struct {
	OK                 bool              `json:"ok"`
	Serial             string            `json:"serial,omitempty"`
	Passport           string            `json:"passport,omitempty"`
	Error              string            `json:"error,omitempty"`
	Entries            uint64            `json:"entries"`
	Serials            int               `json:"serials,omitempty"`
	RegistryChanges    int               `json:"registryChanges,omitempty"`
	CheckpointSize     uint64            `json:"checkpointSize,omitempty"`
	Signers            []string          `json:"signers,omitempty"`
	ConsistentWithSize *uint64           `json:"consistentWithSize,omitempty"`
	OpenFindings       []json.RawMessage `json:"openFindings,omitempty"`
	Story              []string          `json:"story,omitempty"`
	FromEvent          uint64            `json:"fromEvent,omitempty"`
	MapSize            uint64            `json:"mapSize,omitempty"`
	Seconds            float64           `json:"seconds,omitempty"`
	EntriesPerSecond   float64           `json:"entriesPerSecond,omitempty"`
}

// verdict prints v as JSON (-o json) or runs text, and returns errSilent
// when the verdict is a failure.
func (c *cli) verdict(v verdict, text func()) error {
	if c.json() {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "%s\n", b)
	} else if text != nil {
		text()
	}
	if !v.OK {
		return errSilent
	}
	return nil
}

// verifyPassport checks a passport file offline.
func (c *cli) verifyPassport(file, genesis string, minSigners int) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var pinned []byte
	if genesis != "" {
		if pinned, err = os.ReadFile(genesis); err != nil {
			return fmt.Errorf("--genesis: %w", err)
		}
	}
	p, err := verify.ParsePassport(b)
	if err == nil {
		var rep *verify.SerialReport
		if rep, err = verify.Passport(p, pinned, minSigners); err == nil {
			vd := verdict{OK: true, Passport: file, Serial: rep.Serial, Entries: uint64(len(rep.Entries)), CheckpointSize: rep.Checkpoint.Size, FromEvent: rep.From, MapSize: rep.MapSize,
				Signers: rep.Checkpoint.Signers, Story: rep.Story()}
			return c.verdict(vd, func() {
				fmt.Fprintf(c.out, "OK passport of %s: %s verified offline against checkpoint size %d signed by %v\n", rep.Serial, plural(len(rep.Entries), "entry"), rep.Checkpoint.Size, rep.Checkpoint.Signers)
				if rep.MapSize > 0 {
					fmt.Fprintf(c.out, "  nothing withheld: the serial map of its checkpoint commits %s to this head, and the registry to the registry entries it carries\n", rep.Serial)
				}
				if rep.From > 0 {
					fmt.Fprintf(c.out, "  from event %d on: the passport holds the history from where its reader became party; the %d events before, and the custody rules over them, are not in it\n", rep.From, rep.From)
				}
				if pinned == nil {
					fmt.Fprintf(c.out, "  (the passport's own genesis was trusted; pin yours with --genesis)\n")
				}
				for _, line := range rep.Story() {
					fmt.Fprintln(c.out, "  "+line)
				}
			})
		}
	}
	return c.verdict(verdict{Passport: file, Error: err.Error()}, func() { fmt.Fprintf(c.out, "FAILED %s: %v\n", file, err) })
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"google.golang.org/protobuf/encoding/protojson"
	"io"
	"os"
	"runtime/debug"
	"time"

	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/schollz/progressbar/v3"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	"github.com/gpuledger/gpuledger/verify"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

func verifyCmd(c *cli) *cobra.Command {
	var trustDir, passport string
	var all, failOnFindings, fromScratch bool
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
cores, rebuilds the registry, every serial's chain and state under the custody
rules (with the flags the node reports), and the serial map from them, and
compares the roots with the checkpoint's, with a progress bar; it names the
first bad entry, or the serial a node's map misstates (WITHHELD), and exits 0
only when everything holds. What it verified is kept in --trust-dir
(<ledger id>.audit): the next run resumes from there and verifies only the
entries appended since, and --from-scratch verifies everything again.

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
				return c.verifyAll(cmd.Context(), v, verify.NewClient(conn), &verify.TrustStore{Dir: trustDir}, fromScratch)
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
	cmd.Flags().BoolVar(&fromScratch, "from-scratch", false, "with --all: verify every entry again, not only those after the last run's")
	cmd.Flags().IntVar(&minSigners, "min-signers", 1, "require the checkpoint signed by nodes of K distinct organisations (the node gathers its peers' cosignatures)")
	cmd.Flags().StringVar(&passport, "passport", "", "verify a custody passport file offline")
	cmd.Flags().BoolVar(&failOnFindings, "fail-on-findings", false, "exit 3 when the chain holds but the serial has open findings")
	cmd.Flags().StringVar(&trustDir, "trust-dir", verify.DefaultTrustDir(), "where the last verified checkpoint of each ledger is kept, and verify --all's audit store (env GPULEDGER_TRUST_DIR)")
	return cmd
}

// verifyAll verifies the log up to the node's checkpoint: the entries after
// the audit store's mark (all of them the first time, or with fromScratch),
// then the serial map rebuilt from them against every checkpoint seen.
func (c *cli) verifyAll(ctx context.Context, v *verify.Verifier, client *verify.Client, store *verify.TrustStore, fromScratch bool) error {
	if os.Getenv("GOGC") == "" {
		// The run allocates per entry (decoding, and the signature
		// library's own big integers) and keeps little. Over 228,891
		// entries GOGC=400 ran 4% faster than the default for twice the
		// peak memory (539 against 269 MB); 200 takes part of both.
		debug.SetGCPercent(200)
	}
	cp, trusted, err := v.LatestCheckpoint(ctx, client, store)
	if err != nil {
		var fork *verify.ForkError
		if errors.As(err, &fork) {
			fmt.Fprintf(c.out, "FAILED: %v\n", err)
			return errSilent
		}
		return err
	}
	if err := os.MkdirAll(store.Dir, 0o700); err != nil {
		return fmt.Errorf("trust store: %w", err)
	}
	audit, err := ledger.OpenAuditStore(store.AuditDir(v.Origin()))
	if err != nil {
		return err
	}
	defer audit.Close()
	if fromScratch {
		if err := audit.Reset(); err != nil {
			return err
		}
	}
	s, err := v.ResumeStream(audit)
	if err != nil {
		return err
	}
	defer s.Close()
	vd := verdict{CheckpointSize: cp.Size, Signers: cp.Signers}
	if trusted != nil {
		vd.ConsistentWithSize = &trusted.Size
	}
	if s.Next() > cp.Size {
		vd.Error = fmt.Sprintf("FORK: this client verified the log up to size %d before; the node's checkpoint is of size %d", s.Next(), cp.Size)
		return c.verdict(vd, func() { fmt.Fprintf(c.out, "FAILED: %s\n", vd.Error) })
	}
	// The checkpoints whose map roots are checked: the one verified before,
	// when this run passes through it, and the node's.
	stops := []*verify.Checkpoint{cp}
	if trusted != nil && trusted.Size > s.Next() && trusted.Size < cp.Size {
		stops = []*verify.Checkpoint{trusted, cp}
	}
	var stream grpc.ServerStreamingClient[pb.StreamEntriesResponse]
	if s.Next() < cp.Size {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if stream, err = client.Ledger.StreamEntries(sctx, &pb.StreamEntriesRequest{StartIndex: s.Next(), EnvelopesOnly: true, Batch: 256}); err != nil {
			return err
		}
	}
	barOut := io.Discard
	if interactive(c.errOut) {
		barOut = c.errOut
	}
	from := s.Next()
	bar := progressbar.NewOptions64(int64(cp.Size-from), progressbar.OptionSetWriter(barOut), progressbar.OptionSetDescription("verifying"),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("entries"),
		progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
	start := time.Now()
	var rep *verify.AllReport
	var pending []*pb.Entry // received, not yet verified
	for _, stop := range stops {
		err := s.Run(ctx, func() (*pb.Entry, error) {
			if s.Next() == stop.Size {
				return nil, nil // entries after the checkpoint are verified next time
			}
			for len(pending) == 0 {
				m, err := stream.Recv()
				if err == io.EOF {
					return nil, nil
				}
				if err != nil {
					return nil, err
				}
				if pending = m.GetEntries(); m.GetEntry() != nil {
					pending = append(pending, m.GetEntry()) // a node that does not batch
				}
			}
			e := pending[0]
			pending = pending[1:]
			return e, nil
		}, func(n uint64) { bar.Set64(int64(n - from)) })
		if err != nil {
			return err
		}
		if rep, err = s.Finish(); err != nil {
			return err
		}
		switch {
		case !rep.OK():
			vd.Error = fmt.Sprintf("entry %d: %s (%d problems)", rep.First(), rep.FirstProblem(), len(rep.Failures))
		case rep.Entries != stop.Size:
			vd.Error = fmt.Sprintf("the node streamed the log up to %d entries; its checkpoint commits to %d", rep.Entries, stop.Size)
		case rep.Root != stop.Root:
			vd.Error = fmt.Sprintf("the entries hash to root %x at size %d; the signed checkpoint says %x", rep.Root[:], stop.Size, stop.Root[:])
		}
		if vd.Error != "" {
			break
		}
		root, err := s.Commit()
		if err != nil {
			return err
		}
		if stop.MapRoot != nil && *stop.MapRoot != root {
			vd.Error = s.MapMismatch(ctx, client, stop, 1000).Error()
			break
		}
	}
	bar.Finish()
	elapsed := time.Since(start)
	vd.From, vd.Entries, vd.Serials, vd.RegistryChanges = from, rep.Entries-from, rep.Serials, rep.Registry
	vd.Seconds, vd.EntriesPerSecond = elapsed.Seconds(), float64(rep.Entries-from)/elapsed.Seconds()
	if vd.Error == "" {
		vd.OK = true
		if rep.MapRoot != nil && cp.MapRoot != nil {
			vd.MapSize = cp.Size
		}
	}
	return c.verdict(vd, func() {
		if !vd.OK {
			fmt.Fprintf(c.out, "FAILED: %s\n", vd.Error)
			return
		}
		what := plural(int(cp.Size), "entry")
		switch {
		case from > 0 && from == cp.Size:
			what = fmt.Sprintf("nothing appended since the %s verified before", plural(int(from), "entry"))
		case from > 0:
			what = fmt.Sprintf("the %s after the %d verified before", plural(int(cp.Size-from), "entry"), from)
		}
		fmt.Fprintf(c.out, "OK: %s (%s, %s) verified against checkpoint size %d signed by %v in %v (%.0f entries/s)\n",
			what, plural(rep.Serials, "serial"), plural(rep.Registry, "registry change"), cp.Size, cp.Signers,
			elapsed.Round(time.Millisecond), vd.EntriesPerSecond)
		switch {
		case vd.MapSize > 0 && len(stops) > 1:
			fmt.Fprintf(c.out, "  serial map rebuilt from the log: the map roots of the checkpoints of sizes %d and %d are the log's (nothing withheld, nothing misstated)\n", stops[0].Size, cp.Size)
		case vd.MapSize > 0:
			fmt.Fprintf(c.out, "  serial map rebuilt from the log: the checkpoint's map root is the log's (nothing withheld, nothing misstated)\n")
		}
		if trusted != nil {
			fmt.Fprintf(c.out, "  the checkpoint extends the one verified before (size %d): consistency proved\n", trusted.Size)
		}
		fmt.Fprintf(c.out, "  verified state kept in %s: the next run verifies only what is appended (--from-scratch: everything)\n", store.AuditDir(v.Origin()))
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
	From               uint64            `json:"from,omitempty"`
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

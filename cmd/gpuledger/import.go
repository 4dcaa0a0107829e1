package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func importCmd(c *cli) *cobra.Command {
	var keyFile, keyDir string
	var batch int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "import FILE.jsonl (--key FILE | --keys DIR)",
		Short: "sign and submit custody events from a JSON Lines file",
		Long: `import reads one CustodyEvent per line (protobuf JSON, as in
{"serial":"GPU-1","type":"EVENT_TYPE_SHIPPED","actor":"acme-gpu","counterparty":"eu-dist"}),
signs each with its actor's key and submits them in batches through
AppendBatch, with a progress bar on standard error.

Keys: --key FILE signs every line (lines without an actor get the key's);
--keys DIR signs each line with DIR/<actor>.key. A line without
prev_event_hash chains to the previous line of the same serial, or to the
serial's head on the node. Lines without ledger_id name the node's ledger
(its checkpoint's origin). Lines without occurred_at are dated now, lines
without a location are placed at the actor's first site. Re-importing a file
whose lines all carry occurred_at and location makes byte-identical envelopes
(both schemes sign deterministically here), which the ledger reports as
already present.`,
		Args: needArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (keyFile == "") == (keyDir == "") {
				return fmt.Errorf("give exactly one of --key FILE and --keys DIR")
			}
			if batch < 1 || batch > 1000 {
				return fmt.Errorf("--batch %d: want 1 to 1000", batch)
			}
			return c.importFile(cmd.Context(), args[0], keyFile, keyDir, batch, quiet)
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "private key file that signs every line")
	cmd.Flags().StringVar(&keyDir, "keys", "", "directory of <participant>.key files, one per actor")
	cmd.Flags().IntVar(&batch, "batch", 500, "envelopes per AppendBatch call (1 to 1000)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

// importAdvice rewords a rejection's advice for an import line: the line's
// fields, not submit's flags, are what to change.
func importAdvice(e *pb.AppendError, undated bool) string {
	msg := strings.ReplaceAll(e.GetMessage(), "check the clock or --at", "check the line's occurredAt")
	switch {
	case e.GetReason() == custody.ReasonStaleHead && undated:
		msg += " (this line has no occurredAt, so it was dated now and signed anew: it is a new event, not the one already in the log; give every line an occurredAt to make re-imports idempotent)"
	case e.GetReason() == custody.ReasonStaleHead:
		msg = strings.ReplaceAll(msg, "fetch the head and sign again", "another event moved the serial's head; re-import the lines from here on")
	}
	return msg
}

type importLine struct {
	line    int
	env     *pb.Envelope
	undated bool // the line had no occurredAt and was dated now
}

func (c *cli) importFile(ctx context.Context, path, keyFile, keyDir string, batch int, quiet bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	keySets := map[string]*keys.KeySet{}
	var fixed *keys.KeySet
	if keyFile != "" {
		if fixed, err = keys.ReadFile(keyFile); err != nil {
			return err
		}
		c.as = fixed
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	lc := gpuledgerv1grpc.NewLedgerServiceClient(conn)
	keyFor := func(actor string) (*keys.KeySet, error) {
		if fixed != nil {
			if actor != fixed.Participant {
				return nil, fmt.Errorf("actor %q, but --key belongs to %q", actor, fixed.Participant)
			}
			return fixed, nil
		}
		if ks, ok := keySets[actor]; ok {
			return ks, nil
		}
		if !custody.ValidParticipantID(actor) { // before it becomes part of a path
			return nil, fmt.Errorf("actor %q is not a participant id ([a-z0-9][a-z0-9-]{1,62}); give each line the actor that signs it", actor)
		}
		ks, err := keys.ReadFile(filepath.Join(keyDir, actor+".key"))
		if err != nil {
			return nil, err
		}
		keySets[actor] = ks
		return ks, nil
	}
	locs := map[string]*pb.Location{}
	heads := map[string][]byte{}
	var lines []importLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		ev := new(pb.CustodyEvent)
		if err := protojson.Unmarshal([]byte(text), ev); err != nil {
			return fmt.Errorf("%s line %d: not a CustodyEvent in JSON: %v", path, n, err)
		}
		if ev.Actor == "" && fixed != nil {
			ev.Actor = fixed.Participant
		}
		if ev.LedgerId == "" {
			if ev.LedgerId, err = c.ledgerID(ctx); err != nil {
				return err
			}
		}
		ks, err := keyFor(ev.GetActor())
		if err != nil {
			return fmt.Errorf("%s line %d: %w", path, n, err)
		}
		undated := ev.OccurredAt == nil
		if undated {
			ev.OccurredAt = timestamppb.New(time.Now().UTC())
		}
		if ev.Location == nil {
			if _, ok := locs[ev.GetActor()]; !ok {
				loc, err := c.location(ctx, ev.GetActor(), &submitFlags{})
				if err != nil {
					return fmt.Errorf("%s line %d: %w", path, n, err)
				}
				locs[ev.GetActor()] = loc
			}
			ev.Location = locs[ev.GetActor()]
		}
		if len(ev.PrevEventHash) == 0 && ev.GetType() != pb.EventType_EVENT_TYPE_MANUFACTURED {
			h, ok := heads[ev.GetSerial()]
			if !ok {
				if h, err = c.head(ctx, lc, ev.GetSerial()); err != nil {
					return fmt.Errorf("%s line %d: %w", path, n, err)
				}
			}
			ev.PrevEventHash = h
		}
		env, err := dsse.SignMessage(dsse.CustodyEventType, ev, ks.Signers()...)
		if err != nil {
			return err
		}
		raw, _ := dsse.Marshal(env)
		h := sha256.Sum256(raw)
		heads[ev.GetSerial()] = h[:]
		lines = append(lines, importLine{line: n, env: env, undated: undated})
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		return fmt.Errorf("%s line %d: longer than 1 MiB; a line holds one event (nothing was submitted)", path, n+1)
	} else if err != nil {
		return err
	}
	var bar *progressbar.ProgressBar
	if !quiet && interactive(c.errOut) {
		bar = progressbar.NewOptions(len(lines), progressbar.OptionSetWriter(c.errOut), progressbar.OptionSetDescription("importing"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("events"),
			progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	}
	var accepted, dups, rejected, flagged int
	start := time.Now()
	for i := 0; i < len(lines); i += batch {
		part := lines[i:min(len(lines), i+batch)]
		req := &pb.AppendBatchRequest{}
		for _, l := range part {
			req.Envelopes = append(req.Envelopes, l.env)
		}
		var resp *pb.AppendBatchResponse
		var err error
		for attempt := 1; ; attempt++ {
			cctx, cancel := c.ctx(ctx)
			resp, err = gpuledgerv1grpc.NewLedgerServiceClient(conn).AppendBatch(cctx, req)
			cancel()
			if !retryable(err) || attempt == 5 {
				break
			}
			time.Sleep(retryDelay(err, attempt)) // an election; appends are idempotent
		}
		if err != nil {
			return fmt.Errorf("lines %d to %d: %w", part[0].line, part[len(part)-1].line, err)
		}
		var last *pb.Receipt // the batch's receipt with the largest index
		rs := make([]*pb.Receipt, len(resp.GetResults()))
		for j, r := range resp.GetResults() {
			if rc := r.GetReceipt(); rc != nil && rc.GetIndex() >= last.GetIndex() {
				last = rc
			}
			rs[j] = r.GetReceipt()
		}
		if len(rs) != len(req.Envelopes) {
			return fmt.Errorf("lines %d to %d: the node answered %d results for %d envelopes", part[0].line, part[len(part)-1].line, len(rs), len(req.Envelopes))
		}
		if err := c.checkReceipts(ctx, req.Envelopes, rs); err != nil {
			return fmt.Errorf("lines %d to %d: %w", part[0].line, part[len(part)-1].line, err)
		}
		c.saw(ctx, last)
		for j, r := range resp.GetResults() {
			switch {
			case r.GetError() != nil:
				rejected++
				fmt.Fprintf(c.errOut, "%s line %d: rejected: %s: %s\n", path, part[j].line, r.GetError().GetReason(), importAdvice(r.GetError(), part[j].undated))
			case r.GetReceipt().GetDuplicate():
				dups++
			default:
				accepted++
				if len(r.GetReceipt().GetFlags()) > 0 {
					flagged++
				}
			}
		}
		if bar != nil {
			bar.Add(len(part))
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if c.json() {
		b, err := json.MarshalIndent(map[string]any{"file": path, "accepted": accepted, "flagged": flagged, "alreadyPresent": dups,
			"rejected": rejected, "seconds": time.Since(start).Seconds()}, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "%s\n", b)
	} else {
		fmt.Fprintf(c.out, "imported %s: %d accepted (%d flagged), %d already present, %d rejected, in %v\n",
			path, accepted, flagged, dups, rejected, time.Since(start).Round(time.Millisecond))
	}
	if rejected > 0 {
		return errSilent
	}
	return nil
}

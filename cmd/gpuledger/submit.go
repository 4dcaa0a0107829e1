package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/ledger/custody"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"github.com/gpuledger/gpuledger/verify"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// eventTypes maps submit's subcommands to event types.
// flags lists the flags beyond the common ones (--key, --serial, --country,
// --site, --at, --reference) that each takes.
var eventTypes = []struct {
	name, help string
	typ        pb.EventType
	flags      []string
}{
	{"manufacture", "record that you made a GPU (manufacturers; needs --model)", pb.EventType_EVENT_TYPE_MANUFACTURED, []string{"model", "eccn", "parent"}},
	{"ship", "record that you shipped a GPU you hold to --to", pb.EventType_EVENT_TYPE_SHIPPED, []string{"to", "license", "destination", "parent"}},
	{"receive", "record that you took custody of a GPU", pb.EventType_EVENT_TYPE_RECEIVED, []string{"to", "parent"}},
	{"install", "record that you installed a GPU you hold at --site", pb.EventType_EVENT_TYPE_INSTALLED, []string{"parent"}},
	{"attest", "attest that an installed GPU is still where it was installed", pb.EventType_EVENT_TYPE_ATTESTED, nil},
	{"decommission", "record that you took a GPU out of service", pb.EventType_EVENT_TYPE_DECOMMISSIONED, nil},
	{"destroy", "record that you destroyed a GPU you hold", pb.EventType_EVENT_TYPE_DESTROYED, nil},
	{"report-lost", "report a GPU lost", pb.EventType_EVENT_TYPE_REPORTED_LOST, nil},
}

type submitFlags struct {
	key, serial, to, country, site, model, eccn, license, dest, reference, parent, at string
}

func submitCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "submit EVENT --key FILE --serial S [flags]",
		Short: "sign and submit a custody event",
		Long: `submit fetches the serial's head from the node, builds the event, signs it with
every key in --key (both, for a hybrid key set) and submits it, then prints the
receipt: the entry's index and hash, the checkpoint that includes it, and any
flags the ledger recorded. If another event moved the head first, it fetches
the new head and signs again (up to 3 times). The actor is the participant
named in the key file.`,
	}
	for _, et := range eventTypes {
		var f submitFlags
		sub := &cobra.Command{
			Use:   et.name + " --key FILE --serial S [flags]",
			Short: et.help,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.submit(cmd.Context(), et.typ, &f)
			},
		}
		fl := sub.Flags()
		fl.StringVar(&f.key, "key", "", "private key file of the actor (keygen, or DIR/keys/<id>.key of a dev node)")
		fl.StringVar(&f.serial, "serial", "", "the GPU's serial number")
		fl.StringVar(&f.country, "country", "", "ISO 3166-1 alpha-2 country where it happened (default: the site's, else your registered country)")
		fl.StringVar(&f.site, "site", "", "your site id where it happened (default: your first site)")
		fl.StringVar(&f.reference, "reference", "", "waybill, order or ticket number")
		fl.StringVar(&f.at, "at", "", "when it happened, RFC 3339 (default: now)")
		extra := map[string]func(){
			"to": func() {
				help := "the consignee"
				if et.typ == pb.EventType_EVENT_TYPE_RECEIVED {
					help = "the shipper you received it from (optional)"
				}
				fl.StringVar(&f.to, "to", "", help)
			},
			"model":   func() { fl.StringVar(&f.model, "model", "", "GPU model, for example H100-SXM5-80GB (required)") },
			"eccn":    func() { fl.StringVar(&f.eccn, "eccn", "", "Export Control Classification Number, e.g. 3A090.a") },
			"license": func() { fl.StringVar(&f.license, "license", "", "export licence number covering the shipment") },
			"destination": func() {
				fl.StringVar(&f.dest, "destination", "", "ISO 3166-1 alpha-2 country the shipment is bound for (default: the consignee's)")
			},
			"parent": func() { fl.StringVar(&f.parent, "parent", "", "serial of the server or board this GPU is inside") },
		}
		for _, name := range et.flags {
			extra[name]()
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func (c *cli) submit(ctx context.Context, typ pb.EventType, f *submitFlags) error {
	if f.key == "" || f.serial == "" {
		return fmt.Errorf("%s required", missing(map[string]string{"--key": f.key, "--serial": f.serial}, "--key", "--serial"))
	}
	ks, err := keys.ReadFile(f.key)
	if err != nil {
		return err
	}
	if ks.Participant == "" {
		return fmt.Errorf("key file %s names no participant; make keys with gpuledger keygen --participant ID", f.key)
	}
	c.as = ks
	if !custody.ValidSerial(f.serial) {
		return fmt.Errorf("--serial %q: want 1 to 64 characters of A-Z a-z 0-9 . _ : / -", f.serial)
	}
	at := time.Now().UTC()
	if f.at != "" {
		if at, err = time.Parse(time.RFC3339, f.at); err != nil {
			return fmt.Errorf("--at %q: want RFC 3339, e.g. 2026-03-01T09:00:00Z", f.at)
		}
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	lc := gpuledgerv1grpc.NewLedgerServiceClient(conn)
	loc, err := c.location(ctx, ks.Participant, f)
	if err != nil {
		return err
	}
	id, err := c.ledgerID(ctx)
	if err != nil {
		return err
	}
	ev := &pb.CustodyEvent{
		LedgerId: id, Serial: f.serial, Type: typ, Actor: ks.Participant, Counterparty: f.to, Location: loc,
		OccurredAt: timestamppb.New(at), Model: f.model, Eccn: f.eccn, ParentSerial: f.parent,
		Reference: f.reference, ExportLicense: f.license, DestinationCountry: strings.ToUpper(f.dest),
	}
	for attempt := 1; ; attempt++ {
		if typ != pb.EventType_EVENT_TYPE_MANUFACTURED {
			head, err := c.head(ctx, lc, f.serial)
			if err != nil {
				return err
			}
			ev.PrevEventHash = head
		}
		env, err := dsse.SignMessage(dsse.CustodyEventType, ev, ks.Signers()...)
		if err != nil {
			return err
		}
		cctx, cancel := c.ctx(ctx)
		resp, err := lc.Append(cctx, &pb.AppendRequest{Envelope: env})
		cancel()
		code := status.Code(err)
		switch {
		case err == nil:
			if err := c.checkReceipts(ctx, []*pb.Envelope{env}, []*pb.Receipt{resp.GetReceipt()}); err != nil {
				return err
			}
			c.saw(ctx, resp.GetReceipt())
			return c.printReceipt(resp.GetReceipt())
		case code == codes.Aborted && attempt < 3:
			fmt.Fprintf(c.errOut, "the head of %s moved; signing again on the new head\n", f.serial)
			continue
		case retryable(err) && attempt < 5:
			time.Sleep(retryDelay(err, attempt)) // an election; appends are idempotent
			continue
		}
		return err
	}
}

// head returns the serial's current head, or nil when it has no records. It
// reads the head as of at least the log size this client last saw in a
// receipt (seenSize), so that a submit through a follower right after a write
// through another node signs on that write, and it asks again for a moment
// before it takes NOT_FOUND to mean "no such serial" (the serial may be
// being written through another node).
func (c *cli) head(ctx context.Context, lc gpuledgerv1grpc.LedgerServiceClient, serial string) ([]byte, error) {
	minIndex := c.seenSize(ctx)
	for attempt := 0; ; attempt++ {
		cctx, cancel := c.ctx(ctx)
		r, err := lc.GetSerial(cctx, &pb.GetSerialRequest{Serial: serial, MinIndex: minIndex})
		cancel()
		switch {
		case status.Code(err) == codes.NotFound && attempt < notFoundRetries:
			time.Sleep(100 * time.Millisecond)
			continue
		case status.Code(err) == codes.NotFound:
			return nil, nil
		case minIndex > 0 && reasonOf(err) == "STALE_READ":
			return nil, fmt.Errorf("the node has not applied the %d entries this client has seen in receipts (%s): it is behind, or its history was rolled back; "+
				"retry, ask another node, or delete that file if you trust this node's history: %w", minIndex, c.seenPath(ctx), err)
		case err != nil:
			return nil, err
		}
		return r.GetSerial().GetHeadHash(), nil
	}
}

// notFoundRetries is how often head asks again for a serial the node does
// not know (every 100 ms).
const notFoundRetries = 5

// seenPath is where this client keeps, per ledger, the largest log size it
// has seen in a receipt: beside the verified checkpoints (--trust-dir's
// default, $GPULEDGER_TRUST_DIR).
func (c *cli) seenPath(ctx context.Context) string {
	id, err := c.ledgerID(ctx)
	if err != nil {
		return ""
	}
	return filepath.Join(verify.DefaultTrustDir(), id+".seen")
}

// seenSize is the largest log size this client has seen in a receipt of the
// node's ledger (0 when none).
func (c *cli) seenSize(ctx context.Context) uint64 {
	p := c.seenPath(ctx)
	if p == "" {
		return 0
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// saw records a receipt's log size (its index + 1) when it is larger than
// the one kept.
func (c *cli) saw(ctx context.Context, r *pb.Receipt) {
	p := c.seenPath(ctx)
	if p == "" || r == nil || r.GetIndex()+1 <= c.seenSize(ctx) {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	tmp := p + ".tmp"
	if os.WriteFile(tmp, []byte(strconv.FormatUint(r.GetIndex()+1, 10)+"\n"), 0o600) == nil {
		os.Rename(tmp, p)
	}
}

// location fills the event's location from the flags and the actor's
// registered sites.
func (c *cli) location(ctx context.Context, actor string, f *submitFlags) (*pb.Location, error) {
	cctx, cancel := c.ctx(ctx)
	defer cancel()
	conn, _ := c.dial()
	r, err := gpuledgerv1grpc.NewRegistryServiceClient(conn).GetParticipant(cctx, &pb.GetParticipantRequest{Id: actor})
	if err != nil {
		return nil, err
	}
	p := r.GetParticipant()
	loc := &pb.Location{Country: p.GetCountry()}
	sites := p.GetSites()
	var site *pb.Site
	switch {
	case f.site != "":
		for _, s := range sites {
			if s.GetId() == f.site {
				site = s
			}
		}
		if site == nil {
			ids := make([]string, len(sites))
			for i, s := range sites {
				ids[i] = s.GetId()
			}
			return nil, fmt.Errorf("--site %q is not a site of %s (its sites: %s)", f.site, actor, strings.Join(ids, ", "))
		}
	case f.country == "" && len(sites) > 0:
		site = sites[0]
	}
	if site != nil {
		loc = &pb.Location{Country: site.GetCountry(), SiteId: site.GetId(), LatitudeE6: site.LatitudeE6, LongitudeE6: site.LongitudeE6}
	}
	if f.country != "" {
		loc.Country = strings.ToUpper(f.country)
		if site != nil && site.GetCountry() != loc.Country {
			loc.SiteId, loc.LatitudeE6, loc.LongitudeE6 = "", nil, nil
		}
	}
	return loc, nil
}

// checkReceipts verifies the node's receipts for the envelopes sent (see
// verify.Receipts) against --genesis and the trust store, or says once that
// they are not verified, and how to have them verified, when no genesis is
// given.
func (c *cli) checkReceipts(ctx context.Context, envs []*pb.Envelope, rs []*pb.Receipt) error {
	if c.genesis == "" {
		c.genesis = os.Getenv("GPULEDGER_GENESIS")
	}
	if c.genesis == "" {
		if !c.unproven {
			c.unproven = true
			fmt.Fprintln(c.errOut, "warning: the node's receipts are NOT verified: give --genesis FILE (or GPULEDGER_GENESIS), the genesis you trust, and each is checked (signatures, inclusion, consistency)")
		}
		return nil
	}
	g, err := os.ReadFile(c.genesis)
	if err != nil {
		return fmt.Errorf("--genesis: %w", err)
	}
	v, err := verify.New(g)
	if err != nil {
		return fmt.Errorf("--genesis %s: %w", c.genesis, err)
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	cctx, cancel := c.ctx(ctx)
	defer cancel()
	return v.Receipts(cctx, verify.NewClient(conn), &verify.TrustStore{Dir: verify.DefaultTrustDir()}, envs, rs)
}

func (c *cli) printReceipt(r *pb.Receipt) error {
	if c.json() {
		return c.printJSON(r)
	}
	what := "accepted"
	if r.GetDuplicate() {
		what = "already in the ledger"
	}
	fmt.Fprintf(c.out, "%s: entry %d\n  entry hash   %x\n  accepted at  %s\n  checkpoint   size %d, root %x\n  inclusion    %d proof hashes\n",
		what, r.GetIndex(), r.GetEntryHash(), r.GetAcceptedAt().AsTime().Format(time.RFC3339),
		r.GetCheckpoint().GetSize(), r.GetCheckpoint().GetRootHash(), len(r.GetInclusionProof().GetHashes()))
	for _, fl := range r.GetFlags() {
		fmt.Fprintf(c.out, "  FLAG %s (%s): %s\n", trimEnum(fl.GetKind().String(), "FINDING_KIND_"), trimEnum(fl.GetSeverity().String(), "SEVERITY_"), fl.GetDetail())
	}
	return nil
}

func trimEnum(s, prefix string) string { return strings.TrimPrefix(s, prefix) }

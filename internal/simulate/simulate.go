// Package simulate builds a synthetic GPU supply chain through a node's gRPC
// API — every record signed by its participant's key — with diversion
// patterns planted at a given rate, and writes the ground truth (which
// serial should raise which findings) so that the detectors can be checked
// against it: precision and recall per kind, and no finding on a clean serial.
package simulate

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"github.com/gpuledger/gpuledger/proto/gpuledger/v1/gpuledgerv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config says what to simulate.
type Config struct {
	// Serials is how many GPUs (default 10,000).
	Serials int
	// Rate is the share of serials with a planted diversion (default 0.05);
	// at least one of every pattern is planted whatever the rate.
	Rate float64
	// Seed makes the run reproducible (choices and times; not signatures).
	Seed uint64
	// Now is the simulation's present; every event is before it.
	Now time.Time
	// Keys are the private keys of the development consortium's members, by
	// participant id; export-regulator's registers the simulation's extra
	// participants.
	Keys map[string]*keys.KeySet
	// Extra are keys for the extra participants (hub-trading, front-co,
	// restricted-buyer, gulf-dc), made and registered on the first run and
	// reused later; Run fills it.
	Extra map[string]*keys.KeySet
	// Progress, if set, is told how many records have been submitted.
	Progress func(done, total int)
	// LedgerID is the id of the node's ledger, which every signed payload
	// names; Run asks the node for it when empty.
	LedgerID string
}

// Truth is the ground truth of a run.
type Truth struct {
	AsOf     time.Time           `json:"as_of"`
	Seed     uint64              `json:"seed"`
	Expected map[string][]string `json:"expected"` // serial -> finding kinds (short names)
	Clean    []string            `json:"clean"`
	Patterns map[string]string   `json:"patterns"` // serial -> planted pattern
}

// pattern is a planted diversion and the findings it must raise.
type pattern struct {
	name  string
	kinds []string
}

var patterns = []pattern{
	{"handoff-never-received", []string{"HANDOFF_UNCONFIRMED"}},
	{"receipt-by-front-company", []string{"RECEIVER_MISMATCH", "HANDOFF_UNCONFIRMED"}},
	{"installed-goes-silent", []string{"SILENT"}},
	{"transshipment-via-hub-to-restricted", []string{"RESTRICTED_DESTINATION", "TRANSSHIPMENT_HUB"}},
	{"licensed-country-without-licence", []string{"LICENSE_MISSING"}},
	{"unregistered-consignee", []string{"UNREGISTERED_CONSIGNEE", "HANDOFF_UNCONFIRMED"}},
	{"impossible-travel", []string{"IMPOSSIBLE_TRAVEL"}},
	{"fake-destruction-then-attested-elsewhere", []string{"ACTIVITY_AFTER_TERMINAL", "CUSTODY_BREAK"}},
	{"reported-lost", []string{"REPORTED_LOST"}},
	{"attested-by-non-custodian", []string{"CUSTODY_BREAK"}},
	{"attested-from-elsewhere", []string{"LOCATION_MISMATCH"}},
	{"hub-short-dwell", []string{"TRANSSHIPMENT_HUB"}},
	{"rapid-resale", []string{"RAPID_RESALE"}},
	{"impostor-attests-silent-gpu", []string{"SILENT", "CUSTODY_BREAK"}},
	{"datacentre-resells-uninstalled", []string{"DATACENTRE_RESALE"}},
}

// Extra participants the simulation registers (signed by the regulator).
var extras = []consortium.Spec{
	{ID: "hub-trading", Name: "Hub Trading Pte (simulated)", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "SG"},
	{ID: "front-co", Name: "Front Company FZE (simulated)", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "AE"},
	{ID: "restricted-buyer", Name: "Restricted Buyer LLC (simulated)", Role: pb.Role_ROLE_DISTRIBUTOR, Country: "RU"},
	{ID: "gulf-dc", Name: "Gulf Compute (simulated)", Role: pb.Role_ROLE_DATACENTRE, Country: "SA",
		Sites: []*pb.Site{{Id: "riyadh-dc1", Country: "SA"}}},
}

const day = 24 * time.Hour

type sim struct {
	cfg   Config
	rng   *rand.Rand
	lc    gpuledgerv1grpc.LedgerServiceClient
	rc    gpuledgerv1grpc.RegistryServiceClient
	parts map[string]*pb.Participant
	envs  []*pb.Envelope
	heads map[string][]byte
}

// Run registers the extra participants if needed, submits the supply chain
// and returns the ground truth.
func Run(ctx context.Context, conn grpc.ClientConnInterface, cfg Config) (*Truth, error) {
	if cfg.Serials <= 0 {
		cfg.Serials = 10_000
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 0.05
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now().UTC().Truncate(time.Second)
	}
	if cfg.Extra == nil {
		cfg.Extra = map[string]*keys.KeySet{}
	}
	for _, id := range []string{"acme-gpu", "eu-dist", "us-dist", "rack-integrator", "dc-frankfurt", "dc-virginia", "export-regulator"} {
		if cfg.Keys[id] == nil {
			return nil, fmt.Errorf("simulate: no key for %s (the development consortium's keys)", id)
		}
	}
	if cfg.LedgerID == "" {
		r, err := gpuledgerv1grpc.NewAuditServiceClient(conn).GetCheckpoint(ctx, &pb.GetCheckpointRequest{})
		if err != nil {
			return nil, fmt.Errorf("simulate: the node's ledger id: %w", err)
		}
		if cfg.LedgerID, err = ledger.IDFromOrigin(r.GetCheckpoint().GetOrigin()); err != nil {
			return nil, fmt.Errorf("simulate: the node's %w", err)
		}
	}
	s := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x51a7)), lc: gpuledgerv1grpc.NewLedgerServiceClient(conn),
		rc: gpuledgerv1grpc.NewRegistryServiceClient(conn), parts: map[string]*pb.Participant{}, heads: map[string][]byte{}}
	if err := s.register(ctx); err != nil {
		return nil, err
	}
	truth := &Truth{AsOf: cfg.Now, Seed: cfg.Seed, Expected: map[string][]string{}, Patterns: map[string]string{}}
	planted := int(float64(cfg.Serials) * cfg.Rate)
	planted = max(planted, len(patterns))
	planted = min(planted, cfg.Serials)
	which := s.rng.Perm(cfg.Serials)[:planted]
	sort.Ints(which)
	next := 0
	for i := range cfg.Serials {
		serial := fmt.Sprintf("SIM-%d-%06d", cfg.Seed, i)
		if next < len(which) && which[next] == i {
			p := patterns[next%len(patterns)]
			next++
			s.plant(serial, p.name)
			truth.Expected[serial] = p.kinds
			truth.Patterns[serial] = p.name
		} else {
			s.clean(serial)
			truth.Clean = append(truth.Clean, serial)
		}
	}
	return truth, s.submit(ctx)
}

// register makes sure the extra participants exist, registering them with
// regulator-signed registry changes on the first run.
func (s *sim) register(ctx context.Context) error {
	for _, id := range []string{"acme-gpu", "eu-dist", "us-dist", "rack-integrator", "dc-frankfurt", "dc-virginia"} {
		r, err := s.rc.GetParticipant(ctx, &pb.GetParticipantRequest{Id: id})
		if err != nil {
			return fmt.Errorf("simulate: participant %s: %w (run against a development node)", id, err)
		}
		s.parts[id] = r.GetParticipant()
	}
	reg := s.cfg.Keys["export-regulator"]
	for _, spec := range extras {
		r, err := s.rc.GetParticipant(ctx, &pb.GetParticipantRequest{Id: spec.ID})
		if err == nil {
			if s.cfg.Extra[spec.ID] == nil {
				return fmt.Errorf("simulate: %s is registered already but its key is not at hand (keep the simulation's keys directory between runs)", spec.ID)
			}
			s.parts[spec.ID] = r.GetParticipant()
			continue
		}
		if status.Code(err) != codes.NotFound {
			return err
		}
		ks := s.cfg.Extra[spec.ID]
		if ks == nil {
			if ks, err = keys.Generate(spec.ID, nil, keys.Ed25519); err != nil {
				return err
			}
			s.cfg.Extra[spec.ID] = ks
		}
		p := &pb.Participant{Id: spec.ID, DisplayName: spec.Name, Role: spec.Role, Country: spec.Country, Sites: spec.Sites}
		for _, pk := range ks.PublicKeys() {
			p.Keys = append(p.Keys, consortium.PublicKeyProto(pk))
		}
		env, err := dsse.SignMessage(dsse.RegistryChangeType, &pb.RegistryChange{LedgerId: s.cfg.LedgerID, Actor: "export-regulator", OccurredAt: timestamppb.New(s.cfg.Now.Add(-time.Minute)),
			Reason: "simulation: " + spec.Name, Change: &pb.RegistryChange_AddParticipant{AddParticipant: p}}, reg.Signers()...)
		if err != nil {
			return err
		}
		if _, err := s.lc.Append(ctx, &pb.AppendRequest{Envelope: env}); err != nil {
			return fmt.Errorf("simulate: register %s: %w", spec.ID, err)
		}
		s.parts[spec.ID] = p
	}
	return nil
}

func (s *sim) key(id string) *keys.KeySet {
	if ks := s.cfg.Keys[id]; ks != nil {
		return ks
	}
	return s.cfg.Extra[id]
}

// where is a participant's first site, else its country.
func (s *sim) where(id string) *pb.Location {
	p := s.parts[id]
	if len(p.GetSites()) > 0 {
		st := p.GetSites()[0]
		return &pb.Location{Country: st.GetCountry(), SiteId: st.GetId(), LatitudeE6: st.LatitudeE6, LongitudeE6: st.LongitudeE6}
	}
	return &pb.Location{Country: p.GetCountry()}
}

// ev signs one event of a serial, chained to the serial's previous one.
func (s *sim) ev(serial string, typ pb.EventType, actor, counterparty string, at time.Time, mods ...func(*pb.CustodyEvent)) {
	e := &pb.CustodyEvent{LedgerId: s.cfg.LedgerID, Serial: serial, Type: typ, Actor: actor, Counterparty: counterparty, Location: s.where(actor),
		OccurredAt: timestamppb.New(at), PrevEventHash: s.heads[serial]}
	if typ == pb.EventType_EVENT_TYPE_MANUFACTURED {
		e.Model, e.Eccn = "H100-SXM5-80GB", "3A090.a"
	}
	for _, m := range mods {
		m(e)
	}
	env, err := dsse.SignMessage(dsse.CustodyEventType, e, s.key(actor).Signers()...)
	if err != nil {
		panic(err)
	}
	raw, _ := dsse.Marshal(env)
	h := sha256.Sum256(raw)
	s.heads[serial] = h[:]
	s.envs = append(s.envs, env)
}

func (s *sim) jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// supply records manufacture and delivery to a distributor and on to a
// datacentre, from base on; it returns the datacentre and the receipt time.
func (s *sim) supply(serial string, base time.Time) (dist, dc string, at time.Time) {
	dist = []string{"eu-dist", "us-dist", "rack-integrator"}[s.rng.IntN(3)]
	dc = []string{"dc-frankfurt", "dc-virginia"}[s.rng.IntN(2)]
	s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
	s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", dist, base.Add(2*time.Hour))
	s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, dist, "acme-gpu", base.Add(2*day+s.jitter(0, day)))
	s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, dist, dc, base.Add(5*day))
	at = base.Add(7*day + s.jitter(0, day))
	s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, dc, dist, at)
	return dist, dc, at
}

// installAndAttest installs at the datacentre a day after from and attests
// every 30 days while before until, so the last event is at most 30 days
// older than until.
func (s *sim) installAndAttest(serial, dc string, from, until time.Time) {
	t := from.Add(day)
	s.ev(serial, pb.EventType_EVENT_TYPE_INSTALLED, dc, "", t)
	for t = t.Add(30 * day); t.Before(until); t = t.Add(30 * day) {
		s.ev(serial, pb.EventType_EVENT_TYPE_ATTESTED, dc, "", t)
	}
}

// clean is an ordinary life: manufactured 40 to 200 days ago, delivered,
// installed, attested every 30 days.
func (s *sim) clean(serial string) {
	base := s.cfg.Now.Add(-s.jitter(40*day, 200*day))
	_, dc, at := s.supply(serial, base)
	s.installAndAttest(serial, dc, at, s.cfg.Now.Add(-time.Hour))
}

func (s *sim) plant(serial, name string) {
	now := s.cfg.Now
	switch name {
	case "handoff-never-received": // shipped 30-100 days ago, never received
		base := now.Add(-s.jitter(35*day, 105*day))
		dist := "eu-dist"
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", dist, base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, dist, "acme-gpu", base.Add(2*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, dist, "dc-frankfurt", base.Add(5*day))
	case "receipt-by-front-company": // shipped to a datacentre, received by a front company; the datacentre never confirms
		base := now.Add(-s.jitter(30*day, 60*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "eu-dist", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "eu-dist", "acme-gpu", base.Add(2*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "eu-dist", "dc-frankfurt", base.Add(5*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "front-co", "eu-dist", base.Add(7*day))
	case "installed-goes-silent": // installed, never attested again
		base := now.Add(-s.jitter(50*day, 110*day))
		_, dc, at := s.supply(serial, base)
		s.ev(serial, pb.EventType_EVENT_TYPE_INSTALLED, dc, "", at.Add(day))
	case "transshipment-via-hub-to-restricted": // via a WATCH hub into a RESTRICTED country
		base := now.Add(-s.jitter(20*day, 60*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "hub-trading", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "hub-trading", "acme-gpu", base.Add(2*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "hub-trading", "restricted-buyer", base.Add(4*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "restricted-buyer", "hub-trading", base.Add(7*day))
	case "licensed-country-without-licence":
		base := now.Add(-s.jitter(40*day, 150*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "eu-dist", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "eu-dist", "acme-gpu", base.Add(2*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "eu-dist", "gulf-dc", base.Add(5*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "gulf-dc", "eu-dist", base.Add(7*day))
		s.installAndAttest(serial, "gulf-dc", base.Add(7*day), now.Add(-time.Hour))
	case "unregistered-consignee": // shipped to a party outside the registry; nobody can receive it
		base := now.Add(-s.jitter(35*day, 100*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "us-dist", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "us-dist", "acme-gpu", base.Add(2*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "us-dist", "ghost-trading-llc", base.Add(5*day), func(e *pb.CustodyEvent) { e.DestinationCountry = "MX" })
	case "impossible-travel": // a receipt in the US an hour after a receipt in the Netherlands
		base := now.Add(-s.jitter(40*day, 150*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "eu-dist", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "eu-dist", "acme-gpu", base.Add(2*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "eu-dist", "dc-virginia", base.Add(2*day+30*time.Minute))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "dc-virginia", "eu-dist", base.Add(2*day+time.Hour))
		s.installAndAttest(serial, "dc-virginia", base.Add(2*day+time.Hour), now.Add(-time.Hour))
	case "fake-destruction-then-attested-elsewhere":
		base := now.Add(-s.jitter(60*day, 150*day))
		_, dc, at := s.supply(serial, base)
		s.ev(serial, pb.EventType_EVENT_TYPE_INSTALLED, dc, "", at.Add(day))
		s.ev(serial, pb.EventType_EVENT_TYPE_DESTROYED, dc, "", at.Add(10*day))
		other := map[string]string{"dc-frankfurt": "dc-virginia", "dc-virginia": "dc-frankfurt"}[dc]
		s.ev(serial, pb.EventType_EVENT_TYPE_ATTESTED, other, "", at.Add(40*day))
	case "reported-lost":
		base := now.Add(-s.jitter(40*day, 150*day))
		_, dc, at := s.supply(serial, base)
		s.ev(serial, pb.EventType_EVENT_TYPE_INSTALLED, dc, "", at.Add(day))
		s.ev(serial, pb.EventType_EVENT_TYPE_REPORTED_LOST, dc, "", at.Add(20*day))
	case "attested-by-non-custodian": // an integrator in Frankfurt attests a GPU installed at fra-dc1
		base := now.Add(-s.jitter(60*day, 150*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "dc-frankfurt", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "dc-frankfurt", "acme-gpu", base.Add(3*day))
		s.installAndAttest(serial, "dc-frankfurt", base.Add(3*day), now.Add(-3*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_ATTESTED, "rack-integrator", "", now.Add(-2*time.Hour))
	case "attested-from-elsewhere": // the custodian attests from another country
		base := now.Add(-s.jitter(60*day, 150*day))
		_, dc, at := s.supply(serial, base)
		s.installAndAttest(serial, dc, at, now.Add(-3*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_ATTESTED, dc, "", now.Add(-2*time.Hour), func(e *pb.CustodyEvent) {
			e.Location = &pb.Location{Country: "TH"}
		})
	case "hub-short-dwell": // into a transshipment hub and out again within days
		base := now.Add(-s.jitter(40*day, 150*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "hub-trading", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "hub-trading", "acme-gpu", base.Add(2*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "hub-trading", "dc-frankfurt", base.Add(2*day+s.jitter(day, 10*day)))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "dc-frankfurt", "hub-trading", base.Add(15*day))
		s.installAndAttest(serial, "dc-frankfurt", base.Add(15*day), now.Add(-time.Hour))
	case "rapid-resale": // four custodians in under a month
		base := now.Add(-s.jitter(40*day, 150*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		holder, t := "acme-gpu", base
		for _, next := range []string{"eu-dist", "us-dist", "rack-integrator", "dc-frankfurt"} {
			s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, holder, next, t.Add(2*time.Hour))
			t = t.Add(3*day + s.jitter(0, 3*day))
			s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, next, holder, t)
			holder = next
		}
		s.installAndAttest(serial, "dc-frankfurt", t, now.Add(-time.Hour))
	case "impostor-attests-silent-gpu": // the custodian goes silent; a front keeps attesting to hide it
		base := now.Add(-s.jitter(60*day, 110*day))
		_, dc, at := s.supply(serial, base)
		s.ev(serial, pb.EventType_EVENT_TYPE_INSTALLED, dc, "", at.Add(day))
		for t := at.Add(11 * day); t.Before(now.Add(-day)); t = t.Add(15 * day) {
			s.ev(serial, pb.EventType_EVENT_TYPE_ATTESTED, "front-co", "", t)
		}
	case "datacentre-resells-uninstalled": // a datacentre takes delivery and sells the GPU on without installing it
		base := now.Add(-s.jitter(40*day, 100*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_MANUFACTURED, "acme-gpu", "", base)
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "acme-gpu", "dc-virginia", base.Add(2*time.Hour))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "dc-virginia", "acme-gpu", base.Add(3*day))
		s.ev(serial, pb.EventType_EVENT_TYPE_SHIPPED, "dc-virginia", "us-dist", base.Add(3*day+s.jitter(day, 10*day)))
		s.ev(serial, pb.EventType_EVENT_TYPE_RECEIVED, "us-dist", "dc-virginia", base.Add(16*day))
	default:
		panic("simulate: unknown pattern " + name)
	}
}

// submit sends the envelopes in order in batches of 500.
func (s *sim) submit(ctx context.Context) error {
	const batch = 500
	for i := 0; i < len(s.envs); i += batch {
		part := s.envs[i:min(len(s.envs), i+batch)]
		r, err := s.lc.AppendBatch(ctx, &pb.AppendBatchRequest{Envelopes: part})
		if err != nil {
			return fmt.Errorf("simulate: AppendBatch: %w", err)
		}
		for j, res := range r.GetResults() {
			if e := res.GetError(); e != nil {
				return fmt.Errorf("simulate: record %d rejected: %s: %s", i+j, e.GetReason(), e.GetMessage())
			}
		}
		if s.cfg.Progress != nil {
			s.cfg.Progress(min(len(s.envs), i+batch), len(s.envs))
		}
	}
	return nil
}

// KindScore is precision and recall of one finding kind.
type KindScore struct {
	Kind      string  `json:"kind"`
	Planted   int     `json:"planted"`
	Found     int     `json:"found"`
	False     int     `json:"false"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
}

// Report compares the node's findings with the ground truth.
type Report struct {
	Kinds []KindScore
	// CleanWithFindings are clean serials that raised findings (must be none).
	CleanWithFindings map[string][]string
	Findings          int
}

// OK reports whether every planted finding was found and nothing else.
func (r *Report) OK() bool {
	for _, k := range r.Kinds {
		if k.Found != k.Planted || k.False != 0 {
			return false
		}
	}
	return len(r.CleanWithFindings) == 0
}

// Check lists the node's findings on the simulation's serials as of the
// truth's instant and scores them against the truth.
func Check(ctx context.Context, conn grpc.ClientConnInterface, truth *Truth) (*Report, error) {
	ac := gpuledgerv1grpc.NewAuditServiceClient(conn)
	got := map[string][]string{}
	n := 0
	req := &pb.ListFindingsRequest{AsOf: timestamppb.New(truth.AsOf), IncludeResolved: true, PageSize: 1000}
	for {
		r, err := ac.ListFindings(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, f := range r.GetFindings() {
			if _, ours := truth.Patterns[f.GetSerial()]; !ours && !slices.Contains(truth.Clean, f.GetSerial()) {
				continue // another run's serial
			}
			k := f.GetKind().String()[len("FINDING_KIND_"):]
			if !slices.Contains(got[f.GetSerial()], k) {
				got[f.GetSerial()] = append(got[f.GetSerial()], k)
			}
			n++
		}
		if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	rep := &Report{CleanWithFindings: map[string][]string{}, Findings: n}
	scores := map[string]*KindScore{}
	score := func(k string) *KindScore {
		if scores[k] == nil {
			scores[k] = &KindScore{Kind: k}
		}
		return scores[k]
	}
	for serial, kinds := range truth.Expected {
		for _, k := range kinds {
			score(k).Planted++
			if slices.Contains(got[serial], k) {
				score(k).Found++
			}
		}
		for _, k := range got[serial] {
			if !slices.Contains(kinds, k) {
				score(k).False++
			}
		}
	}
	for serial, kinds := range got {
		if _, planted := truth.Expected[serial]; !planted {
			rep.CleanWithFindings[serial] = kinds
			for _, k := range kinds {
				score(k).False++
			}
		}
	}
	for _, s := range scores {
		if s.Found+s.False > 0 {
			s.Precision = float64(s.Found) / float64(s.Found+s.False)
		}
		if s.Planted > 0 {
			s.Recall = float64(s.Found) / float64(s.Planted)
		}
		rep.Kinds = append(rep.Kinds, *s)
	}
	sort.Slice(rep.Kinds, func(i, j int) bool { return rep.Kinds[i].Kind < rep.Kinds[j].Kind })
	return rep, nil
}

// MarshalTruth writes the ground truth as JSON.
func MarshalTruth(t *Truth) ([]byte, error) { return json.MarshalIndent(t, "", "  ") }

// UnmarshalTruth reads it back.
func UnmarshalTruth(b []byte) (*Truth, error) {
	t := new(Truth)
	if err := json.Unmarshal(b, t); err != nil {
		return nil, fmt.Errorf("ground truth: %w", err)
	}
	return t, nil
}

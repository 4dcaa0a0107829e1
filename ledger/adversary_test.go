package ledger_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/crypto/dsse"
	"github.com/gpuledger/gpuledger/crypto/keys"
	"github.com/gpuledger/gpuledger/internal/consortium"
	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The tests in this file play the participants the ledger exists to catch:
// a front company, a straw buyer, a reselling datacentre. Each performs an
// evasion and shows that it fails.

func (f *fixture) serial(sn string) *pb.SerialState {
	f.t.Helper()
	st, err := f.l.Serial(context.Background(), sn)
	if err != nil {
		f.t.Fatalf("Serial(%s) = %v", sn, err)
	}
	return st
}

// custodyOf is the part of a serial's state that only parties with standing
// may move.
func custodyOf(st *pb.SerialState) *pb.SerialState {
	return &pb.SerialState{State: st.GetState(), Custodian: st.GetCustodian(), Location: st.GetLocation(),
		OpenShipment: st.GetOpenShipment(), InstallSite: st.GetInstallSite(), CustodyAt: st.GetCustodyAt(),
		CustodyIndex: st.GetCustodyIndex(), LastAttestedAt: st.GetLastAttestedAt(), HubArrival: st.GetHubArrival(),
		CustodyChanges: st.GetCustodyChanges()}
}

func kindsOf(fs []*pb.Flag) []pb.FindingKind {
	var out []pb.FindingKind
	for _, x := range fs {
		out = append(out, x.GetKind())
	}
	return out
}

func (f *fixture) open(asOf time.Time, serial string) []*pb.Finding {
	f.t.Helper()
	fs, err := f.l.SerialFindings(context.Background(), serial, asOf, false)
	if err != nil {
		f.t.Fatal(err)
	}
	return fs
}

func findingOf(fs []*pb.Finding, k pb.FindingKind) *pb.Finding {
	for _, x := range fs {
		if x.GetKind() == k {
			return x
		}
	}
	return nil
}

// Case 1: a front attests a GPU installed elsewhere. It is flagged, and moves
// neither the GPU's location nor the clock SILENT runs from; the custodian's
// next attestation is not IMPOSSIBLE_TRAVEL.
func TestImpostorAttestationMovesNothing(t *testing.T) {
	f := newFixture(t)
	const sn = "GPU-IMP"
	f.delivered(sn, "dc-frankfurt")
	installed := f.must(f.sign("dc-frankfurt", inst, sn))[0]
	before := custodyOf(f.serial(sn))
	instAt := before.GetCustodyAt().AsTime()
	// The front attests from Singapore every week for two months.
	for i := range 9 {
		f.now = instAt.Add(time.Duration(i+1) * 7 * day)
		r := f.apply(f.sign("sg-dist", att, sn, at(f.now)))[0]
		if r.Err != nil {
			t.Fatalf("the impostor's attestation was refused: %v (evidence is never refused)", r.Err)
		}
		if !slices.Equal(kindsOf(r.Entry.GetFlags()), []pb.FindingKind{pb.FindingKind_FINDING_KIND_CUSTODY_BREAK}) {
			t.Fatalf("impostor attestation flags = %v, want CUSTODY_BREAK", kindsOf(r.Entry.GetFlags()))
		}
		if after := custodyOf(f.serial(sn)); !proto.Equal(after, before) {
			t.Fatalf("the impostor's attestation moved the serial:\n before %v\n after  %v", before, after)
		}
	}
	brk := findingOf(f.open(f.now, sn), pb.FindingKind_FINDING_KIND_CUSTODY_BREAK)
	if brk == nil || !slices.Equal(brk.GetParticipants(), []string{"sg-dist", "dc-frankfurt"}) ||
		!slices.Contains(brk.GetEvidenceIndexes(), installed.GetIndex()) || brk.GetCountry() != "SG" {
		t.Fatalf("CUSTODY_BREAK = %v; want it to name sg-dist and dc-frankfurt, cite the installation and be filed under SG", brk)
	}
	// SILENT still falls due 35 days after the installation.
	silent := findingOf(f.open(instAt.Add(35*day+time.Second), sn), pb.FindingKind_FINDING_KIND_SILENT)
	if silent == nil || silent.GetEvidenceIndexes()[0] != installed.GetIndex() || !strings.Contains(silent.GetSummary(), "others have recorded events") {
		t.Fatalf("SILENT as of installation+35d+1s = %v; want one from the installation that mentions the others' events", silent)
	}
	// The custodian's own attestation, from its site, is clean.
	f.now = f.now.Add(time.Hour)
	r := f.apply(f.sign("dc-frankfurt", att, sn, at(f.now)))[0]
	if r.Err != nil || len(r.Entry.GetFlags()) != 0 {
		t.Fatalf("the custodian's attestation = %v, flags %v; want accepted and clean", r.Err, kindsOf(r.Entry.GetFlags()))
	}
	// It resolves the silence, which stays on record as a resolved finding.
	fs := f.findings(f.now, pb.FindingKind_FINDING_KIND_SILENT)
	if len(fs) != 1 || !fs[0].GetResolved() || fs[0].GetResolvedByIndex() != r.Entry.GetIndex() {
		t.Fatalf("SILENT after the custodian spoke: %v", fs)
	}
}

// Case 2: after destruction, a stranger's event is ACTIVITY_AFTER_TERMINAL and
// CUSTODY_BREAK, and both cite the DESTROYED entry and name who destroyed it.
func TestActivityAfterDestruction(t *testing.T) {
	f := newFixture(t)
	const sn = "GPU-DEAD"
	f.delivered(sn, "dc-frankfurt")
	destroyed := f.must(f.sign("dc-frankfurt", destr, sn))[0]
	before := custodyOf(f.serial(sn))
	late := f.must(f.sign("dc-virginia", att, sn))[0]
	if got := kindsOf(late.GetFlags()); !slices.Equal(got, []pb.FindingKind{pb.FindingKind_FINDING_KIND_ACTIVITY_AFTER_TERMINAL, pb.FindingKind_FINDING_KIND_CUSTODY_BREAK}) {
		t.Fatalf("flags = %v", got)
	}
	if after := custodyOf(f.serial(sn)); !proto.Equal(after, before) {
		t.Fatalf("an event after destruction moved the serial: %v -> %v", before, after)
	}
	for _, x := range f.open(f.now, sn) {
		if !slices.Equal(x.GetParticipants(), []string{"dc-virginia", "dc-frankfurt"}) ||
			!slices.Equal(x.GetEvidenceIndexes(), []uint64{destroyed.GetIndex(), late.GetIndex()}) {
			t.Errorf("%s names %v and cites %v; want dc-virginia and dc-frankfurt, entries %d and %d",
				x.GetId(), x.GetParticipants(), x.GetEvidenceIndexes(), destroyed.GetIndex(), late.GetIndex())
		}
	}
	// The destroyer's own later event is only ACTIVITY_AFTER_TERMINAL.
	own := f.must(f.sign("dc-frankfurt", att, sn))[0]
	if got := kindsOf(own.GetFlags()); !slices.Equal(got, []pb.FindingKind{pb.FindingKind_FINDING_KIND_ACTIVITY_AFTER_TERMINAL}) {
		t.Fatalf("the destroyer's later event: flags %v", got)
	}
}

// Case 3: as_of is a point in time, by event time. A shipment of day 10
// received on day 35 is open from day 31 (plus a second) until the receipt,
// and resolved from the receipt on.
func TestAsOfIsAPointInTime(t *testing.T) {
	f := newFixture(t)
	const sn = "GPU-ASOF"
	day0 := t0
	f.now = day0
	f.must(f.sign("acme-gpu", mfd, sn, at(day0)))
	shippedAt := day0.Add(10 * day)
	f.now = shippedAt
	shipped := f.must(f.sign("acme-gpu", ship, sn, to("eu-dist"), at(shippedAt)))[0]
	receivedAt := day0.Add(35 * day)
	f.now = receivedAt.Add(3 * day) // accepted three days after it happened: event time decides
	received := f.must(f.sign("eu-dist", recv, sn, at(receivedAt)))[0]
	arises := shippedAt.Add(21*day + time.Second)
	id := fmt.Sprintf("HANDOFF_UNCONFIRMED/%d", shipped.GetIndex())
	for _, tc := range []struct {
		name     string
		asOf     time.Time
		open     bool
		resolved bool
	}{
		{"a second before it arose", arises.Add(-time.Second), false, false},
		{"when it arose", arises, true, false},
		{"day 33", day0.Add(33 * day), true, false},
		{"a second before the receipt", receivedAt.Add(-time.Second), true, false},
		{"at the receipt", receivedAt, false, true},
		{"after the receipt", receivedAt.Add(10 * day), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			open := f.open(tc.asOf, sn)
			if got := findingOf(open, pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED) != nil; got != tc.open {
				t.Errorf("SerialFindings as of %s: open = %v, want %v (%v)", tc.asOf.Format(time.RFC3339), got, tc.open, ids(open))
			}
			listed, _, err := f.l.Findings(context.Background(), ledger.FindingQuery{AsOf: tc.asOf, Limit: 10,
				Filter: gaps.Filter{Kinds: []pb.FindingKind{pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED}}})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(listed) == 1; got != tc.open {
				t.Errorf("Findings as of %s: %v, want open %v", tc.asOf.Format(time.RFC3339), ids(listed), tc.open)
			}
			all := f.findings(tc.asOf, pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED)
			switch {
			case !tc.open && !tc.resolved && len(all) != 0:
				t.Errorf("with resolved ones: %v, want none", ids(all))
			case tc.resolved && (len(all) != 1 || !all[0].GetResolved() || all[0].GetResolvedByIndex() != received.GetIndex() ||
				!all[0].GetResolvedAt().AsTime().Equal(receivedAt)):
				t.Errorf("with resolved ones: %v, want %s resolved by entry %d at %s", all, id, received.GetIndex(), receivedAt)
			case tc.open && (len(all) != 1 || all[0].GetResolved() || all[0].GetId() != id):
				t.Errorf("with resolved ones: %v, want %s open (as it stood then)", ids(all), id)
			}
		})
	}
}

// Case 6: findings about a shipment's destination are filed under the
// destination, not the shipper's country.
func TestFindingsFiledUnderDestination(t *testing.T) {
	f := newFixture(t)
	f.must(f.sign("acme-gpu", mfd, "GPU-LIC"))
	f.must(f.sign("acme-gpu", ship, "GPU-LIC", to("sa-dc")))
	f.must(f.sign("acme-gpu", mfd, "GPU-UNREG"))
	f.must(f.sign("acme-gpu", ship, "GPU-UNREG", to("ghost-llc"), func(e *pb.CustodyEvent) { e.DestinationCountry = "AE" }))
	for _, tc := range []struct {
		kind    pb.FindingKind
		country string
	}{
		{pb.FindingKind_FINDING_KIND_LICENSE_MISSING, "SA"},
		{pb.FindingKind_FINDING_KIND_UNREGISTERED_CONSIGNEE, "AE"},
	} {
		out, _, err := f.l.Findings(context.Background(), ledger.FindingQuery{AsOf: f.now, Limit: 10,
			Filter: gaps.Filter{Kinds: []pb.FindingKind{tc.kind}, Country: tc.country}})
		if err != nil || len(out) != 1 {
			t.Errorf("%s in %s: %v, %v; want one", gaps.Name(tc.kind), tc.country, ids(out), err)
		}
		tw, _, _ := f.l.Findings(context.Background(), ledger.FindingQuery{AsOf: f.now, Limit: 10,
			Filter: gaps.Filter{Kinds: []pb.FindingKind{tc.kind}, Country: "TW"}})
		if len(tw) != 0 {
			t.Errorf("%s filed under the shipper's country TW: %v", gaps.Name(tc.kind), ids(tw))
		}
	}
}

// Case 8: a stranger's receipt does not take the GPU. The shipment stays
// open (so HANDOFF_UNCONFIRMED still falls due, naming the claimant), the
// claimant's custodial acts are flagged and change nothing, and the
// consignee's receipt later settles the dispute with no false flags.
func TestStrangerReceiptIsAClaim(t *testing.T) {
	f := newFixture(t)
	const sn = "GPU-HIJACK"
	f.must(f.sign("acme-gpu", mfd, sn))
	shipped := f.must(f.sign("acme-gpu", ship, sn, to("dc-frankfurt")))[0]
	shippedAt := f.serial(sn).GetOpenShipment().GetShippedAt().AsTime()
	before := custodyOf(f.serial(sn))
	claim := f.must(f.sign("dc-virginia", recv, sn, to("acme-gpu")))[0]
	if got := kindsOf(claim.GetFlags()); !slices.Equal(got, []pb.FindingKind{pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH}) {
		t.Fatalf("stranger's receipt flags = %v", got)
	}
	st := f.serial(sn)
	if !proto.Equal(custodyOf(st), before) {
		t.Fatalf("a stranger's receipt moved the serial: %v -> %v", before, custodyOf(st))
	}
	if len(st.GetClaims()) != 1 || st.GetClaims()[0].GetClaimant() != "dc-virginia" || st.GetClaims()[0].GetIndex() != claim.GetIndex() {
		t.Fatalf("claims = %v; want dc-virginia's receipt", st.GetClaims())
	}
	// The claimant installs and destroys it: accepted as evidence, flagged,
	// the record stands.
	for _, typ := range []pb.EventType{inst, destr} {
		r := f.apply(f.sign("dc-virginia", typ, sn))[0]
		if r.Err != nil {
			t.Fatalf("claimant's %v refused: %v", typ, r.Err)
		}
		if got := kindsOf(r.Entry.GetFlags()); !slices.Equal(got, []pb.FindingKind{pb.FindingKind_FINDING_KIND_CUSTODY_BREAK}) {
			t.Fatalf("claimant's %v: flags %v, want CUSTODY_BREAK", typ, got)
		}
		if !proto.Equal(custodyOf(f.serial(sn)), before) {
			t.Fatalf("claimant's %v moved the serial", typ)
		}
	}
	// A stranger that never claimed it may not destroy it at all.
	if r := f.apply(f.sign("us-dist", destr, sn))[0]; !errors.Is(r.Err, &custody.Error{Reason: custody.ReasonNotCustodian}) {
		t.Fatalf("stranger's DESTROYED: %v; want NOT_CUSTODIAN", r.Err)
	}
	// The handoff still falls due, and names the claimant.
	h := findingOf(f.open(shippedAt.Add(21*day+time.Second), sn), pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED)
	if h == nil || !slices.Contains(h.GetParticipants(), "dc-virginia") || !slices.Equal(h.GetEvidenceIndexes(), []uint64{shipped.GetIndex(), claim.GetIndex()}) {
		t.Fatalf("HANDOFF_UNCONFIRMED = %v; want it open, naming dc-virginia and citing the shipment and the claim", h)
	}
	// The consignee receives it: custody passes, the dispute is settled, and
	// nothing the claimant did taints the consignee's receipt.
	r := f.must(f.sign("dc-frankfurt", recv, sn, to("acme-gpu")))[0]
	if len(r.GetFlags()) != 0 {
		t.Fatalf("the consignee's receipt is flagged %v", kindsOf(r.GetFlags()))
	}
	st = f.serial(sn)
	if st.GetCustodian() != "dc-frankfurt" || st.GetState() != pb.CustodyState_CUSTODY_STATE_IN_CUSTODY || len(st.GetClaims()) != 0 {
		t.Fatalf("after the consignee's receipt: custodian %s, state %v, claims %v", st.GetCustodian(), st.GetState(), st.GetClaims())
	}
	// The claimant's findings stay open.
	if got := findingOf(f.open(f.now, sn), pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH); got == nil {
		t.Fatal("the settled dispute erased the RECEIVER_MISMATCH finding")
	}
}

// Case 5: WATCH countries are transshipment hubs. A GPU received there and
// shipped on soon, or shipped on toward somewhere it was not sent for, is
// TRANSSHIPMENT_HUB; clean flows through or into a hub are not.
func TestTransshipmentHub(t *testing.T) {
	hub := pb.FindingKind_FINDING_KIND_TRANSSHIPMENT_HUB
	tests := []struct {
		name string
		run  func(f *fixture, sn string) []pb.FindingKind // the flags of the last event
		want []pb.FindingKind
		sev  pb.Severity
	}{
		{"shipped on from the hub within the dwell", func(f *fixture, sn string) []pb.FindingKind {
			f.must(f.sign("acme-gpu", ship, sn, to("sg-dist")))
			f.must(f.sign("sg-dist", recv, sn))
			f.now = f.now.Add(5 * day)
			return kindsOf(f.must(f.sign("sg-dist", ship, sn, to("dc-frankfurt")))[0].GetFlags())
		}, []pb.FindingKind{hub}, pb.Severity_SEVERITY_HIGH},
		{"re-exported after a long dwell", func(f *fixture, sn string) []pb.FindingKind {
			f.must(f.sign("acme-gpu", ship, sn, to("sg-dist")))
			f.must(f.sign("sg-dist", recv, sn))
			f.now = f.now.Add(60 * day)
			return kindsOf(f.must(f.sign("sg-dist", ship, sn, to("dc-frankfurt")))[0].GetFlags())
		}, []pb.FindingKind{hub}, pb.Severity_SEVERITY_MEDIUM},
		{"the dwell is exactly the limit", func(f *fixture, sn string) []pb.FindingKind {
			f.must(f.sign("acme-gpu", ship, sn, to("sg-dist")))
			recvAt := f.now
			f.must(f.sign("sg-dist", recv, sn, at(recvAt)))
			f.now = recvAt.Add(14 * day)
			return kindsOf(f.must(f.sign("sg-dist", ship, sn, to("dc-frankfurt"), at(f.now)))[0].GetFlags())
		}, []pb.FindingKind{hub}, pb.Severity_SEVERITY_HIGH},
		{"passed through the hub toward the country it was shipped for", func(f *fixture, sn string) []pb.FindingKind {
			f.must(f.sign("acme-gpu", ship, sn, to("sg-dist"), func(e *pb.CustodyEvent) { e.DestinationCountry = "DE" }))
			f.must(f.sign("sg-dist", recv, sn))
			f.now = f.now.Add(30 * day)
			return kindsOf(f.must(f.sign("sg-dist", ship, sn, to("dc-frankfurt")))[0].GetFlags())
		}, nil, 0},
		{"moved within the hub, then out soon after", func(f *fixture, sn string) []pb.FindingKind {
			f.must(f.sign("acme-gpu", ship, sn, to("sg-dist")))
			f.must(f.sign("sg-dist", recv, sn))
			f.now = f.now.Add(30 * day)
			inSG := func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: "SG"} }
			// Within Singapore: no finding, and the GPU's arrival stays the first one.
			if fl := f.must(f.sign("sg-dist", ship, sn, to("eu-dist"), func(e *pb.CustodyEvent) { e.DestinationCountry = "SG" }))[0].GetFlags(); len(fl) != 0 {
				f.t.Fatalf("a move within the hub was flagged %v", kindsOf(fl))
			}
			f.must(f.sign("eu-dist", recv, sn, inSG))
			return kindsOf(f.must(f.sign("eu-dist", ship, sn, to("dc-frankfurt"), inSG))[0].GetFlags())
		}, []pb.FindingKind{hub}, pb.Severity_SEVERITY_MEDIUM},
		{"received in the hub and kept there: clean", func(f *fixture, sn string) []pb.FindingKind {
			f.must(f.sign("acme-gpu", ship, sn, to("sg-dist")))
			return kindsOf(f.must(f.sign("sg-dist", recv, sn))[0].GetFlags())
		}, nil, 0},
		{"shipped to a hub: clean", func(f *fixture, sn string) []pb.FindingKind {
			return kindsOf(f.must(f.sign("acme-gpu", ship, sn, to("sg-dist")))[0].GetFlags())
		}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			sn := "GPU-HUB"
			f.must(f.sign("acme-gpu", mfd, sn))
			if got := tc.run(f, sn); !slices.Equal(got, tc.want) {
				t.Fatalf("flags = %v, want %v", got, tc.want)
			}
			if tc.want == nil {
				return
			}
			x := findingOf(f.open(f.now, sn), hub)
			if x == nil || x.GetSeverity() != tc.sev || x.GetCountry() == "SG" || len(x.GetEvidenceIndexes()) != 2 ||
				!slices.Contains(x.GetParticipants(), "acme-gpu") {
				t.Fatalf("finding %v; want severity %v, filed under the onward destination, citing the hub receipt and the shipment, naming the hub custodian and who shipped it there", x, tc.sev)
			}
		})
	}
}

// RAPID_RESALE: more than three changes of custodian within 90 days.
func TestRapidResale(t *testing.T) {
	resale := pb.FindingKind_FINDING_KIND_RAPID_RESALE
	chain := []string{"eu-dist", "us-dist", "rack-integrator", "dc-frankfurt"}
	for _, tc := range []struct {
		name string
		gap  time.Duration // between receipts
		hops int
		want bool
	}{
		{"three changes in a week: a normal supply chain", 2 * day, 3, false},
		{"four changes within 90 days", 20 * day, 4, true},
		{"four changes over more than 90 days", 31 * day, 4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			sn := "GPU-FLIP"
			f.must(f.sign("acme-gpu", mfd, sn))
			holder := "acme-gpu"
			var last *pb.Entry
			for _, next := range chain[:tc.hops] {
				f.must(f.sign(holder, ship, sn, to(next)))
				f.now = f.now.Add(tc.gap - day)
				last = f.must(f.sign(next, recv, sn))[0]
				holder = next
			}
			got := slices.Contains(kindsOf(last.GetFlags()), resale)
			if got != tc.want {
				t.Fatalf("RAPID_RESALE on the last receipt = %v, want %v (flags %v)", got, tc.want, kindsOf(last.GetFlags()))
			}
			if !got {
				return
			}
			x := findingOf(f.open(f.now, sn), resale)
			if x == nil || len(x.GetEvidenceIndexes()) != 4 || !slices.Equal(slices.Sorted(slices.Values(x.GetParticipants())), slices.Sorted(slices.Values(chain))) {
				t.Fatalf("RAPID_RESALE finding %v; want it to cite the four receipts and name the four custodians", x)
			}
		})
	}
}

// TestGenesisUnknownCountry: a founding participant in an unassigned
// country code does not found a ledger.
func TestGenesisUnknownCountry(t *testing.T) {
	specs := consortium.Dev()
	specs[1].Country = "ZZ"
	c, err := consortium.Build(specs, consortium.Options{Rand: rand.NewChaCha8([32]byte{2})})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ledger.DefaultConfig(t.TempDir())
	cfg.Genesis, cfg.NodeSigner, cfg.Logger = c.Genesis, c.NodeSigner, slog.New(slog.DiscardHandler)
	l, err := ledger.Open(context.Background(), cfg)
	if err == nil {
		l.Close()
		t.Fatal("a genesis with a participant in ZZ founded a ledger")
	}
	if !strings.Contains(err.Error(), `"ZZ"`) || !strings.Contains(err.Error(), "ISO 3166-1") {
		t.Fatalf("error %q does not say the country is unknown", err)
	}
}

// TestNoParticipantMovesAnothersGPU is the invariant: no participant can, by
// its own events alone, take a GPU out of its legitimate custodian's hands,
// end its life, keep it from going silent or make a finding disappear,
// without an open finding that names it. Random events by parties without
// standing are thrown at serials in every state; every accepted one leaves
// the custody record as it was and raises a finding naming its actor, and
// every rejected one changes nothing. The findings of the store replayed from
// its log equal the original's.
func TestNoParticipantMovesAnothersGPU(t *testing.T) {
	f := newFixture(t)
	rng := rand.New(rand.NewPCG(7, 7))
	setups := map[string]func(sn string){
		"in custody": func(sn string) { f.delivered(sn, "eu-dist") },
		"in transit": func(sn string) {
			f.delivered(sn, "eu-dist")
			f.must(f.sign("eu-dist", ship, sn, to("dc-frankfurt")))
		},
		"installed": func(sn string) { f.delivered(sn, "dc-frankfurt"); f.must(f.sign("dc-frankfurt", inst, sn)) },
		"lost":      func(sn string) { f.delivered(sn, "dc-frankfurt"); f.must(f.sign("dc-frankfurt", lost, sn)) },
		"destroyed": func(sn string) { f.delivered(sn, "dc-frankfurt"); f.must(f.sign("dc-frankfurt", destr, sn)) },
		"in a hub":  func(sn string) { f.delivered(sn, "sg-dist") },
	}
	names := make([]string, 0, len(setups))
	for n := range setups {
		names = append(names, n)
	}
	slices.Sort(names)
	actors := []string{"acme-gpu", "eu-dist", "us-dist", "rack-integrator", "dc-frankfurt", "dc-virginia", "sg-dist", "cn-trader", "sa-dc", "pq-dist"}
	types := []pb.EventType{ship, recv, inst, att, decomm, destr, lost}
	accepted := 0
	for i, name := range names {
		sn := fmt.Sprintf("GPU-INV-%d", i)
		setups[name](sn)
		for range 40 {
			st := f.serial(sn)
			actor := actors[rng.IntN(len(actors))]
			if s := custody.StandingOf(st, actor); s != custody.Stranger && s != custody.Claimant {
				continue
			}
			if st.GetState() == pb.CustodyState_CUSTODY_STATE_DESTROYED && actor == st.GetCustodian() {
				continue
			}
			typ := types[rng.IntN(len(types))]
			mods := []func(*pb.CustodyEvent){to(actors[rng.IntN(len(actors))])}
			if rng.IntN(3) == 0 { // claim to be somewhere far away
				mods = append(mods, func(e *pb.CustodyEvent) { e.Location = &pb.Location{Country: []string{"RU", "AE", "BR"}[rng.IntN(3)]} })
			}
			f.now = f.now.Add(time.Duration(rng.IntN(20)) * day)
			env := f.sign(actor, typ, sn, mods...)
			snapBefore := f.snap(sn)
			r := f.apply(env)[0]
			if r.Err != nil {
				if after := f.snap(sn); !snapBefore.equal(after) {
					t.Fatalf("%s: rejected %v by %s changed the store", name, typ, actor)
				}
				continue
			}
			accepted++
			if after := custodyOf(f.serial(sn)); !proto.Equal(after, custodyOf(st)) {
				t.Fatalf("%s: %v by %s (%s) moved the serial:\n before %v\n after  %v", name, typ, actor, custody.StandingOf(st, actor), custodyOf(st), after)
			}
			named := false
			for _, x := range f.open(f.now, sn) {
				named = named || (slices.Contains(x.GetEvidenceIndexes(), r.Entry.GetIndex()) && slices.Contains(x.GetParticipants(), actor))
			}
			if !named {
				t.Fatalf("%s: %v by %s was accepted with no open finding naming it (flags %v)", name, typ, actor, kindsOf(r.Entry.GetFlags()))
			}
		}
	}
	if accepted < 100 {
		t.Fatalf("only %d hostile events were accepted; the test exercises too little", accepted)
	}
	// The store replayed from its log has the same findings, byte for byte.
	asOf := f.now.Add(400 * day)
	want := f.findings(asOf)
	g := newFixture(t)
	for _, b := range f.log {
		if _, err := g.l.Apply(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	got := g.findings(asOf)
	if len(got) != len(want) {
		t.Fatalf("replayed store has %d findings, the original %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("finding %d differs after replay:\n original %v\n replayed %v", i, want[i], got[i])
		}
	}
}

// TestCrossLedgerReplay: a second ledger registers the very same keys (the
// same members, another genesis). Nothing signed for the first is valid in
// the second: not its events, not its regulator's registry changes (a key
// added to acme-gpu, a policy with no restricted countries). Each is
// refused with WRONG_LEDGER on ledger_id, naming both ledgers, and the
// second ledger is unchanged; an event without a ledger id is refused too.
// The first ledger accepted all of them.
func TestCrossLedgerReplay(t *testing.T) {
	a := newFixture(t)
	twin, err := consortium.Build(testSpecs(), consortium.Options{Rand: rand.NewChaCha8([32]byte{1}), LedgerName: "twin"})
	if err != nil {
		t.Fatal(err)
	}
	if twin.LedgerID == a.c.LedgerID || !bytes.Equal(twin.Member("acme-gpu").Participant.GetKeys()[0].GetPublicKey(), a.member("acme-gpu").Participant.GetKeys()[0].GetPublicKey()) {
		t.Fatal("the twin consortium must have the same keys and another ledger id")
	}
	cfg := ledger.DefaultConfig(t.TempDir())
	cfg.Genesis, cfg.NodeSigner, cfg.Logger = twin.Genesis, twin.NodeSigner, slog.New(slog.DiscardHandler)
	b, err := ledger.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	extra, _ := keys.Generate("acme-gpu", nil, keys.Ed25519)
	pol := a.l.Registry().Policy().Proto()
	pol.Version++
	pol.Countries = nil
	envs := [][]byte{
		a.sign("acme-gpu", mfd, "GPU-R1"),
		a.member("export-regulator").SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.New(a.now),
			Change: &pb.RegistryChange_AddKey{AddKey: &pb.AddKey{ParticipantId: "acme-gpu", Key: consortium.PublicKeyProto(extra.PublicKeys()[0])}}}),
		a.member("export-regulator").SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.New(a.now),
			Change: &pb.RegistryChange_SetPolicy{SetPolicy: pol}}),
	}
	a.must(envs...)
	rs, err := b.Apply(context.Background(), ledger.Batch{AcceptedAt: a.now.Add(time.Minute), Envelopes: envs})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		var rej *custody.Error
		if !errors.As(r.Err, &rej) || rej.Reason != custody.ReasonWrongLedger || rej.Field != "ledger_id" ||
			!strings.Contains(rej.Msg, a.c.LedgerID) || !strings.Contains(rej.Msg, twin.LedgerID) {
			t.Errorf("replayed envelope %d: %v, want WRONG_LEDGER on ledger_id naming both ledgers", i, r.Err)
		}
	}
	ev := a.event("acme-gpu", mfd, "GPU-R2")
	ev.LedgerId = ""
	raw := consortium.SignEnvelope(dsse.CustodyEventType, ev, a.member("acme-gpu").Keys.Signers()...)
	if r := a.apply(raw)[0]; r.Err == nil || !strings.Contains(r.Err.Error(), "names no ledger_id") {
		t.Errorf("an event naming no ledger: %v, want WRONG_LEDGER", r.Err)
	}
	if b.Size() != 0 || len(b.Registry().Participant("acme-gpu").GetKeys()) != 1 || b.Registry().Policy().Proto().GetVersion() == pol.GetVersion() {
		t.Errorf("the twin ledger changed: %d entries, acme-gpu has %d keys", b.Size(), len(b.Registry().Participant("acme-gpu").GetKeys()))
	}
	if len(a.l.Registry().Participant("acme-gpu").GetKeys()) != 2 {
		t.Errorf("the first ledger did not take the key it was sent")
	}
}

// TestBatchTimeMonotonic: the ledger's time does not run backwards, on every
// replica alike. A batch dated a little before the last one (a new leader's
// clock a few seconds behind) is dated at the last batch's time; one dated
// further back than the clock skew is refused whole and changes nothing.
func TestBatchTimeMonotonic(t *testing.T) {
	f := newFixture(t)
	f.must(f.sign("acme-gpu", mfd, "GPU-M1"))
	last := f.l.LastAcceptedAt()
	rs, err := f.l.Apply(context.Background(), ledger.Batch{AcceptedAt: last.Add(-time.Minute), Envelopes: [][]byte{f.sign("acme-gpu", mfd, "GPU-M2", at(last.Add(-2*time.Minute)))}})
	if err != nil || rs[0].Err != nil {
		t.Fatalf("a batch a minute behind: %v %v", err, rs)
	}
	if got := rs[0].Entry.GetAcceptedAt().AsTime(); !got.Equal(last) {
		t.Errorf("a batch a minute behind was dated %s, want the last batch's %s", got, last)
	}
	size, root := f.l.Size(), f.l.Root()
	_, err = f.l.Apply(context.Background(), ledger.Batch{AcceptedAt: last.Add(-time.Hour), Envelopes: [][]byte{f.sign("acme-gpu", mfd, "GPU-M3", at(last.Add(-2*time.Hour)))}})
	var bt *ledger.BatchTimeError
	if !errors.As(err, &bt) || !strings.Contains(err.Error(), "more than the clock skew") {
		t.Fatalf("a batch an hour behind: %v, want a BatchTimeError", err)
	}
	if f.l.Size() != size || f.l.Root() != root {
		t.Errorf("the refused batch changed the log")
	}
}

// signChange signs a registry change by actor with the keys of every member
// named, in order (the actor first).
func signChange(c *consortium.Consortium, ch *pb.RegistryChange, by ...string) []byte {
	if ch.LedgerId == "" {
		ch.LedgerId = c.LedgerID
	}
	var signers []keys.Signer
	for _, id := range by {
		signers = append(signers, c.Member(id).Keys.Signers()...)
	}
	return consortium.SignEnvelope(dsse.RegistryChangeType, ch, signers...)
}

// TestRegulatorQuorum: one regulator's key is no master key. With a genesis
// quorum of 2 of 3 regulators, a change one regulator signs is refused
// (QUORUM_NOT_MET); two regulators may add a key to a participant, and the
// entry is then flagged KEY_ADDED_BY_REGULATOR naming the participant and
// both regulators, unless the participant co-signs it as its consent; a
// participant's signature counts for no quorum and fits no other change
// (SIGNER_NOT_REGULATOR). Regulators cannot suspend or strip of keys so
// many regulators that fewer than the quorum could act (LAST_REGULATOR),
// and a suspension can be lifted. Nothing refused changes the registry.
func TestRegulatorQuorum(t *testing.T) {
	specs := append(testSpecs(),
		consortium.Spec{ID: "reg-b", Name: "Second Authority", Role: pb.Role_ROLE_REGULATOR, Country: "DE"},
		consortium.Spec{ID: "reg-c", Name: "Third Authority", Role: pb.Role_ROLE_REGULATOR, Country: "JP"})
	c, err := consortium.Build(specs, consortium.Options{Rand: rand.NewChaCha8([32]byte{12}), RegistryQuorum: 2})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ledger.DefaultConfig(t.TempDir())
	cfg.Genesis, cfg.NodeSigner, cfg.Logger = c.Genesis, c.NodeSigner, slog.New(slog.DiscardHandler)
	l, err := ledger.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now := t0
	apply := func(env []byte) ledger.Result {
		t.Helper()
		now = now.Add(time.Minute)
		rs, err := l.Apply(context.Background(), ledger.Batch{AcceptedAt: now, Envelopes: [][]byte{env}})
		if err != nil {
			t.Fatal(err)
		}
		return rs[0]
	}
	refused := func(name string, env []byte, reason string) {
		t.Helper()
		size := l.Size()
		r := apply(env)
		var rej *custody.Error
		if !errors.As(r.Err, &rej) || rej.Reason != reason {
			t.Errorf("%s: %v, want %s", name, r.Err, reason)
		}
		if l.Size() != size {
			t.Errorf("%s: the log grew", name)
		}
	}
	ch := func(c *pb.RegistryChange) *pb.RegistryChange {
		c.Actor, c.OccurredAt = "export-regulator", timestamppb.New(now)
		return c
	}
	newKey, _ := keys.Generate("acme-gpu", nil, keys.Ed25519)
	addKey := func() *pb.RegistryChange {
		return ch(&pb.RegistryChange{Change: &pb.RegistryChange_AddKey{AddKey: &pb.AddKey{ParticipantId: "acme-gpu", Key: consortium.PublicKeyProto(newKey.PublicKeys()[0])}}})
	}
	suspend := func(id string) *pb.RegistryChange {
		return ch(&pb.RegistryChange{Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: id}}})
	}
	unsuspend := func(id string) *pb.RegistryChange {
		return ch(&pb.RegistryChange{Change: &pb.RegistryChange_UnsuspendParticipant{UnsuspendParticipant: &pb.UnsuspendParticipant{ParticipantId: id}}})
	}

	refused("one regulator adds a key", signChange(c, addKey(), "export-regulator"), custody.ReasonQuorum)
	refused("a regulator and a distributor suspend", signChange(c, suspend("sg-dist"), "export-regulator", "eu-dist"), custody.ReasonChangeSigner)
	refused("a regulator and the participant add its key", signChange(c, addKey(), "export-regulator", "acme-gpu"), custody.ReasonQuorum)
	if n := len(l.Registry().Participant("acme-gpu").GetKeys()); n != 1 {
		t.Fatalf("acme-gpu has %d keys after refused changes", n)
	}

	r := apply(signChange(c, addKey(), "export-regulator", "reg-b"))
	if r.Err != nil {
		t.Fatalf("two regulators add a key: %v", r.Err)
	}
	fl := r.Entry.GetFlags()
	if len(fl) != 1 || fl[0].GetKind() != pb.FindingKind_FINDING_KIND_KEY_ADDED_BY_REGULATOR ||
		!slices.Equal(fl[0].GetParticipants(), []string{"acme-gpu", "export-regulator", "reg-b"}) {
		t.Errorf("a key added without its holder's signature: flags %v, want KEY_ADDED_BY_REGULATOR naming acme-gpu and both regulators", fl)
	}
	fs, _, err := l.Findings(context.Background(), ledger.FindingQuery{Filter: gaps.Filter{Kinds: []pb.FindingKind{pb.FindingKind_FINDING_KIND_KEY_ADDED_BY_REGULATOR}}, AsOf: now.Add(time.Hour), Limit: 10})
	if err != nil || len(fs) != 1 || fs[0].GetEvidenceIndexes()[0] != r.Entry.GetIndex() {
		t.Errorf("findings: %v %v, want the KEY_ADDED_BY_REGULATOR finding citing entry %d", fs, err, r.Entry.GetIndex())
	}
	consented, _ := keys.Generate("eu-dist", nil, keys.Ed25519)
	add2 := ch(&pb.RegistryChange{Change: &pb.RegistryChange_AddKey{AddKey: &pb.AddKey{ParticipantId: "eu-dist", Key: consortium.PublicKeyProto(consented.PublicKeys()[0])}}})
	if r := apply(signChange(c, add2, "export-regulator", "reg-c", "eu-dist")); r.Err != nil || len(r.Entry.GetFlags()) != 0 {
		t.Errorf("a key added with its holder's signature: %v, flags %v; want accepted, unflagged", r.Err, r.Entry.GetFlags())
	}

	if r := apply(signChange(c, suspend("reg-c"), "export-regulator", "reg-b")); r.Err != nil {
		t.Fatalf("suspend one regulator of three: %v", r.Err)
	}
	refused("suspend a second regulator (one would be left, the quorum is 2)", signChange(c, suspend("reg-b"), "export-regulator", "reg-b"), custody.ReasonLastRegulator)
	regB := c.Member("reg-b").Participant.GetKeys()[0].GetKeyId()
	revoke := ch(&pb.RegistryChange{Change: &pb.RegistryChange_RevokeKey{RevokeKey: &pb.RevokeKey{ParticipantId: "reg-b", KeyId: regB}}})
	refused("revoke the only key of a second regulator", signChange(c, revoke, "export-regulator", "reg-b"), custody.ReasonLastRegulator)
	refused("a suspended regulator co-signs", signChange(c, unsuspend("reg-c"), "export-regulator", "reg-c"), custody.ReasonSuspended)
	if r := apply(signChange(c, unsuspend("reg-c"), "export-regulator", "reg-b")); r.Err != nil {
		t.Fatalf("unsuspend: %v", r.Err)
	}
	if l.Registry().Participant("reg-c").GetSuspendedAtIndex() != 0 {
		t.Error("reg-c is still suspended")
	}
	refused("unsuspend a participant that is not suspended", signChange(c, unsuspend("reg-c"), "export-regulator", "reg-b"), custody.ReasonNotSuspended)
	other := suspend("export-regulator")
	other.Actor = "reg-b"
	if r := apply(signChange(c, other, "reg-b", "reg-c")); r.Err != nil {
		t.Errorf("suspend one regulator after the unsuspension: %v", r.Err)
	}

	// The development default: one regulator. It can neither suspend
	// itself nor revoke its only key: the registry would freeze for good.
	f := newFixture(t)
	reg := f.member("export-regulator")
	selfSuspend := f.apply(reg.SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
		Change: &pb.RegistryChange_SuspendParticipant{SuspendParticipant: &pb.SuspendParticipant{ParticipantId: "export-regulator"}}}))[0]
	if rej := (*custody.Error)(nil); !errors.As(selfSuspend.Err, &rej) || rej.Reason != custody.ReasonLastRegulator {
		t.Errorf("the only regulator suspends itself: %v, want LAST_REGULATOR", selfSuspend.Err)
	}
	// It may revoke all of its keys but the last, signing with those left.
	signers := reg.Keys.Signers()
	for i, k := range reg.Participant.GetKeys() {
		rev := &pb.RegistryChange{LedgerId: f.c.LedgerID, Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
			Change: &pb.RegistryChange_RevokeKey{RevokeKey: &pb.RevokeKey{ParticipantId: "export-regulator", KeyId: k.GetKeyId()}}}
		r := f.apply(consortium.SignEnvelope(dsse.RegistryChangeType, rev, signers[i:]...))[0]
		last := i == len(signers)-1
		if rej := (*custody.Error)(nil); last && (!errors.As(r.Err, &rej) || rej.Reason != custody.ReasonLastRegulator) {
			t.Errorf("the only regulator revokes its last key %s: %v, want LAST_REGULATOR", k.GetKeyId(), r.Err)
		} else if !last && r.Err != nil {
			t.Errorf("the regulator revokes key %s, keeping another: %v", k.GetKeyId(), r.Err)
		}
	}

	// A genesis whose quorum no set of regulators can meet founds nothing.
	bad, err := consortium.Build(testSpecs(), consortium.Options{Rand: rand.NewChaCha8([32]byte{13}), RegistryQuorum: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.ParseGenesis(bad.Genesis); err == nil || !strings.Contains(err.Error(), "registry_quorum 2") {
		t.Errorf("a genesis with quorum 2 and one regulator: %v", err)
	}
}

// TestSerialFlood: a custodian cannot make a serial unverifiable by
// appending huge evidence. An event with 50 KB of evidence is refused at
// the policy's 16 KiB (EVIDENCE_TOO_LARGE, on evidence); 1,400 attestations
// with 15 KiB each are accepted until the custodian's budget on the serial
// (16 MiB) is spent, then refused (SERIAL_BUDGET_EXCEEDED, with when to
// retry), while another party's event on the same serial is still accepted
// (its budget is its own) and the custodian's budget refills with the
// ledger's time.
func TestSerialFlood(t *testing.T) {
	f := newFixture(t)
	f.must(f.sign("acme-gpu", mfd, "GPU-FLOOD"))
	f.must(f.sign("acme-gpu", pb.EventType_EVENT_TYPE_INSTALLED, "GPU-FLOOD"))
	evidence := func(n int) func(*pb.CustodyEvent) {
		return func(e *pb.CustodyEvent) {
			e.Evidence = []*pb.Evidence{{Type: "application/octet-stream", Data: make([]byte, n)}}
		}
	}
	r := f.apply(f.sign("acme-gpu", att, "GPU-FLOOD", evidence(50_000)))[0]
	var rej *custody.Error
	if !errors.As(r.Err, &rej) || rej.Reason != custody.ReasonEvidenceTooLarge || rej.Field != "evidence" {
		t.Fatalf("50 KB of evidence: %v, want EVIDENCE_TOO_LARGE", r.Err)
	}
	// Batches at one time of the ledger, so that the budget does not refill.
	st, _ := f.l.Serial(context.Background(), "GPU-FLOOD")
	head := st.GetHeadHash()
	var envs [][]byte
	for i := range 1400 {
		env := f.member("acme-gpu").SignEvent(f.event("acme-gpu", att, "GPU-FLOOD", evidence(15<<10), func(e *pb.CustodyEvent) {
			e.PrevEventHash = head
			e.OccurredAt = timestamppb.New(f.now.Add(time.Duration(i) * time.Second))
		}))
		h := sha256.Sum256(env)
		head = h[:]
		envs = append(envs, env)
	}
	size := f.l.Size()
	var rs []ledger.Result
	for i := 0; i < len(envs); i += 400 {
		got, err := f.l.Apply(context.Background(), ledger.Batch{AcceptedAt: f.now.Add(time.Hour), Envelopes: envs[i:min(i+400, len(envs))]})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, got...)
	}
	accepted := 0
	for accepted < len(rs) && rs[accepted].Err == nil {
		accepted++
	}
	if accepted < 1000 || accepted > 1100 || !errors.As(rs[accepted].Err, &rej) || rej.Reason != custody.ReasonSerialBudget || !strings.Contains(rej.Msg, "retry after") {
		t.Fatalf("%d of 1,400 accepted, then %v; want about 1,060 (16 MiB of ~15.8 KB envelopes), then SERIAL_BUDGET_EXCEEDED", accepted, rs[min(accepted, len(rs)-1)].Err)
	}
	t.Logf("%d of 1,400 attestations of 15 KiB accepted before the budget ran out: %v", accepted, rs[accepted].Err)
	if got := f.l.Size() - size; got != uint64(accepted) {
		t.Errorf("the log grew by %d, want %d", got, accepted)
	}
	// Another party's attestation of the same serial: its budget is its own.
	f.now = f.now.Add(2 * time.Hour)
	if r := f.apply(f.sign("eu-dist", att, "GPU-FLOOD"))[0]; r.Err != nil {
		t.Errorf("another party's event after the custodian's flood: %v", r.Err)
	}
	// A month later the custodian's budget has refilled by 1 MiB.
	f.now = f.now.Add(31 * 24 * time.Hour)
	if r := f.apply(f.sign("acme-gpu", att, "GPU-FLOOD", evidence(15<<10)))[0]; r.Err != nil {
		t.Errorf("the custodian a month later: %v", r.Err)
	}
}

// TestBoundedScans: a list call that matches little costs bounded work.
// With a scan bound of 20, finding serials of a custodian that holds none
// among 150, and findings of a participant named in none among 150, takes
// pages of at most 20 entries examined each, empty but for a continuation,
// until the index ends; paging through them all finds what an unbounded call
// finds.
func TestBoundedScans(t *testing.T) {
	f := newFixture(t)
	var envs [][]byte
	for i := range 150 {
		envs = append(envs, f.sign("acme-gpu", mfd, fmt.Sprintf("GPU-B%03d", i)))
	}
	f.must(envs...)
	envs = envs[:0]
	for i := range 150 {
		envs = append(envs, f.sign("acme-gpu", pb.EventType_EVENT_TYPE_SHIPPED, fmt.Sprintf("GPU-B%03d", i), func(e *pb.CustodyEvent) { e.Counterparty = "ghost-co" }))
	}
	f.must(envs...)
	ctx := context.Background()
	pages, after := 0, ""
	for {
		sts, next, err := f.l.Serials(ctx, ledger.SerialFilter{Custodian: "nobody"}, after, 100, 20)
		if err != nil || len(sts) != 0 {
			t.Fatalf("serials of nobody: %v %v", sts, err)
		}
		pages++
		if next == "" {
			break
		}
		after = next
	}
	if pages < 150/20 || pages > 150/20+2 {
		t.Errorf("%d pages of serials, want about %d", pages, 150/20+1)
	}
	all := func(flt gaps.Filter, maxScan int) (int, int) {
		n, calls := 0, 0
		var after []byte
		for {
			fs, next, err := f.l.Findings(ctx, ledger.FindingQuery{Filter: flt, AsOf: f.now, After: after, Limit: 100, MaxScan: maxScan})
			if err != nil {
				t.Fatal(err)
			}
			n, calls = n+len(fs), calls+1
			if next == nil {
				return n, calls
			}
			after = next
		}
	}
	if n, calls := all(gaps.Filter{Participant: "nobody"}, 20); n != 0 || calls < 150/20 {
		t.Errorf("findings of nobody: %d in %d calls, want 0 in %d or more", n, calls, 150/20)
	}
	want, _ := all(gaps.Filter{}, 0)
	if got, calls := all(gaps.Filter{}, 20); got != want || want < 150 {
		t.Errorf("every finding, 20 examined a call: %d in %d calls; unbounded: %d", got, calls, want)
	}
}

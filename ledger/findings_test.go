package ledger_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gpuledger/gpuledger/ledger"
	"github.com/gpuledger/gpuledger/ledger/gaps"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const day = 24 * time.Hour

func at(t time.Time) func(*pb.CustodyEvent) {
	return func(e *pb.CustodyEvent) { e.OccurredAt = timestamppb.New(t) }
}

func (f *fixture) findings(asOf time.Time, kinds ...pb.FindingKind) []*pb.Finding {
	f.t.Helper()
	out, _, err := f.l.Findings(context.Background(), ledger.FindingQuery{Filter: gaps.Filter{Kinds: kinds, IncludeResolved: true}, AsOf: asOf, Limit: 1000})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func ids(fs []*pb.Finding) []string {
	var out []string
	for _, f := range fs {
		s := f.GetId()
		if f.GetResolved() {
			s += " (resolved)"
		}
		out = append(out, s)
	}
	return out
}

// TestHandoffUnconfirmed: a shipment not received within the window is a
// finding from one second after the window's end, not at it; a late receipt
// resolves it and the resolved finding stays queryable.
func TestHandoffUnconfirmed(t *testing.T) {
	f := newFixture(t)
	f.must(f.sign("acme-gpu", mfd, "GPU-H"))
	shippedAt := f.now
	shipped := f.must(f.sign("acme-gpu", ship, "GPU-H", to("eu-dist"), at(shippedAt)))[0]
	window := 21 * day
	want := fmt.Sprintf("HANDOFF_UNCONFIRMED/%d", shipped.GetIndex())
	for _, tc := range []struct {
		asOf time.Time
		want []string
	}{
		{shippedAt.Add(window - time.Second), nil},
		{shippedAt.Add(window), nil},
		{shippedAt.Add(window + time.Second), []string{want}},
	} {
		if got := ids(f.findings(tc.asOf, pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED)); !slices.Equal(got, tc.want) {
			t.Errorf("as of shipped+%v: %v, want %v", tc.asOf.Sub(shippedAt), got, tc.want)
		}
	}
	// The late receipt resolves it.
	late := shippedAt.Add(window + time.Hour)
	f.now = late
	received := f.must(f.sign("eu-dist", recv, "GPU-H", at(late)))[0]
	got := f.findings(late.Add(60*day), pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED)
	if len(got) != 1 || !got[0].GetResolved() || got[0].GetResolvedByIndex() != received.GetIndex() || got[0].GetId() != want {
		t.Fatalf("after a late receipt: %v", got)
	}
	// An on-time receipt leaves nothing.
	f.must(f.sign("eu-dist", ship, "GPU-H", to("dc-frankfurt")))
	f.must(f.sign("dc-frankfurt", recv, "GPU-H"))
	if got := f.findings(f.now.Add(365*day), pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED); len(got) != 1 {
		t.Fatalf("an on-time receipt left findings: %v", ids(got))
	}
}

// TestSilent: an installed GPU with no event for 35 days is SILENT from one
// second after; an attestation restarts the clock; a GPU in custody gets 120.
func TestSilent(t *testing.T) {
	f := newFixture(t)
	f.delivered("GPU-S", "dc-frankfurt")
	instAt := f.now
	installed := f.must(f.sign("dc-frankfurt", inst, "GPU-S", at(instAt)))[0]
	want := fmt.Sprintf("SILENT/GPU-S/%d", installed.GetIndex())
	for _, tc := range []struct {
		asOf time.Time
		want []string
	}{
		{instAt.Add(35*day - time.Second), nil},
		{instAt.Add(35 * day), nil},
		{instAt.Add(35*day + time.Second), []string{want}},
	} {
		if got := ids(f.findings(tc.asOf, pb.FindingKind_FINDING_KIND_SILENT)); !slices.Equal(got, tc.want) {
			t.Errorf("as of installed+%v: %v, want %v", tc.asOf.Sub(instAt), got, tc.want)
		}
	}
	// An attestation on day 40 breaks the silence: resolved, clock restarts.
	attAt := instAt.Add(40 * day)
	f.now = attAt
	attested := f.must(f.sign("dc-frankfurt", att, "GPU-S", at(attAt)))[0]
	got := f.findings(attAt.Add(time.Hour), pb.FindingKind_FINDING_KIND_SILENT)
	if len(got) != 1 || got[0].GetId() != want || !got[0].GetResolved() || got[0].GetResolvedByIndex() != attested.GetIndex() {
		t.Fatalf("after the attestation: %v", ids(got))
	}
	if got := f.findings(attAt.Add(35*day+time.Second), pb.FindingKind_FINDING_KIND_SILENT); len(got) != 2 {
		t.Fatalf("35 days after the attestation: %v", ids(got))
	}
	// Not installed: 120 days.
	f.must(f.sign("dc-frankfurt", decomm, "GPU-S", at(attAt.Add(time.Hour))))
	if got := f.findings(attAt.Add(time.Hour+100*day), pb.FindingKind_FINDING_KIND_SILENT); len(got) != 1 {
		t.Fatalf("100 days in custody: %v (want only the resolved one)", ids(got))
	}
	if got := f.findings(attAt.Add(time.Hour+120*day+time.Second), pb.FindingKind_FINDING_KIND_SILENT); len(got) != 2 {
		t.Fatalf("120 days and a second in custody: %v", ids(got))
	}
	// Destroyed GPUs are never silent.
	f.must(f.sign("dc-frankfurt", destr, "GPU-S", at(attAt.Add(2*time.Hour))))
	if got := f.findings(attAt.Add(1000*day), pb.FindingKind_FINDING_KIND_SILENT); len(got) != 1 {
		t.Fatalf("destroyed: %v", ids(got))
	}
}

// TestEntryFindingsAndFilters: flags become findings with stable ids,
// evidence and policy version; filters and paging work.
func TestEntryFindingsAndFilters(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		s := fmt.Sprintf("GPU-F%d", i)
		f.must(f.sign("acme-gpu", mfd, s))
		f.must(f.sign("acme-gpu", ship, s, to("eu-dist")))
		f.must(f.sign("sg-dist", recv, s)) // RECEIVER_MISMATCH
	}
	f.must(f.sign("acme-gpu", mfd, "GPU-X"))
	f.must(f.sign("acme-gpu", ship, "GPU-X", to("cn-trader"))) // RESTRICTED_DESTINATION
	asOf := f.now
	mm := f.findings(asOf, pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH)
	if len(mm) != 5 {
		t.Fatalf("RECEIVER_MISMATCH findings: %v", ids(mm))
	}
	for _, x := range mm {
		// The finding cites the shipment and the rival receipt, and names the
		// claimant, the shipper and the consignee.
		if x.GetPolicyVersion() != 1 || len(x.GetEvidenceIndexes()) != 2 || x.GetSummary() == "" ||
			!slices.Equal(x.GetParticipants(), []string{"sg-dist", "acme-gpu", "eu-dist"}) {
			t.Errorf("finding %v lacks evidence, policy version, summary or participants", x)
		}
	}
	q := func(flt gaps.Filter) []string {
		out, _, err := f.l.Findings(context.Background(), ledger.FindingQuery{Filter: flt, AsOf: asOf, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return ids(out)
	}
	if got := q(gaps.Filter{MinSeverity: pb.Severity_SEVERITY_CRITICAL}); len(got) != 1 {
		t.Errorf("critical findings: %v", got)
	}
	if got := q(gaps.Filter{Serial: "GPU-F3"}); len(got) != 1 {
		t.Errorf("findings of GPU-F3: %v", got)
	}
	if got := q(gaps.Filter{Participant: "cn-trader"}); len(got) != 1 {
		t.Errorf("findings of cn-trader: %v", got)
	}
	if got := q(gaps.Filter{Country: "CN"}); len(got) != 1 {
		t.Errorf("findings in CN: %v", got)
	}
	// Paging: two at a time gives the same as all at once.
	var paged []string
	var after []byte
	for {
		out, next, err := f.l.Findings(context.Background(), ledger.FindingQuery{AsOf: asOf, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, ids(out)...)
		if next == nil {
			break
		}
		after = next
	}
	if all := q(gaps.Filter{}); !slices.Equal(paged, all) || len(all) != 6 {
		t.Fatalf("paged %v, all %v", paged, all)
	}
	sf, err := f.l.SerialFindings(context.Background(), "GPU-F1", asOf, false)
	if err != nil || len(sf) != 1 || sf[0].GetKind() != pb.FindingKind_FINDING_KIND_RECEIVER_MISMATCH {
		t.Fatalf("SerialFindings = %v, %v", ids(sf), err)
	}
}

// TestFindingsReplay: findings survive a reopen, and replaying the same
// batches into a fresh store yields identical findings.
func TestFindingsReplay(t *testing.T) {
	batches := mixedBatches(17, 300)
	dir := t.TempDir()
	a := openFixture(t, dir)
	applyAll(t, a.l, batches)
	asOf := t0.Add(3 * 365 * day)
	before := ids(a.findings(asOf))
	if len(before) == 0 {
		t.Fatal("the workload produced no findings")
	}
	a.l.Close()
	a = openFixture(t, dir)
	if got := ids(a.findings(asOf)); !slices.Equal(got, before) {
		t.Fatalf("after reopen %d findings, before %d", len(got), len(before))
	}
	b := newFixture(t)
	applyAll(t, b.l, batches)
	if got := ids(b.findings(asOf)); !slices.Equal(got, before) {
		t.Fatalf("replayed store has other findings")
	}
}

// TestDueBetween: consecutive intervals see each time-based finding once,
// when its window runs out.
func TestDueBetween(t *testing.T) {
	f := newFixture(t)
	f.must(f.sign("acme-gpu", mfd, "GPU-D"))
	shippedAt := f.now
	f.must(f.sign("acme-gpu", ship, "GPU-D", to("eu-dist"), at(shippedAt)))
	due := shippedAt.Add(21 * day)
	seen := 0
	for from := due.Add(-5 * time.Second); from.Before(due.Add(5 * time.Second)); from = from.Add(time.Second) {
		fs, err := f.l.DueBetween(context.Background(), from, from.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range fs {
			if x.GetKind() == pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED {
				seen++
				if present := f.findings(from.Add(time.Second), pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED); len(present) != 1 {
					t.Errorf("DueBetween reported it for (%v, +1s] but Findings as of the end has %v", from.Sub(due), ids(present))
				}
				if before := f.findings(from, pb.FindingKind_FINDING_KIND_HANDOFF_UNCONFIRMED); len(before) != 0 {
					t.Errorf("DueBetween reported it for (%v, +1s] but it was present already", from.Sub(due))
				}
			}
		}
	}
	if seen != 1 {
		t.Fatalf("the handoff fell due %d times; want once", seen)
	}
}

// TestPolicyChange: a regulator replaces the policy with a signed entry;
// later events are judged under it and their findings cite its version.
func TestPolicyChange(t *testing.T) {
	f := newFixture(t)
	pol := f.l.Registry().Policy().Proto()
	pol.Version, pol.Name = 2, "test-2"
	pol.Countries = append(pol.Countries, &pb.CountryRule{Country: "NL", Class: pb.CountryClass_COUNTRY_CLASS_RESTRICTED, Note: "test"})
	// Someone other than a regulator cannot.
	if r := f.apply(f.member("eu-dist").SignChange(&pb.RegistryChange{Actor: "eu-dist", OccurredAt: timestamppb.New(f.now),
		Change: &pb.RegistryChange_SetPolicy{SetPolicy: pol}}))[0]; r.Err == nil {
		t.Fatal("a distributor replaced the policy")
	}
	f.must(f.member("export-regulator").SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
		Change: &pb.RegistryChange_SetPolicy{SetPolicy: pol}}))
	if v := f.l.Registry().Policy().Version(); v != 2 {
		t.Fatalf("policy version %d after the change", v)
	}
	// An older version is refused.
	pol.Version = 1
	if r := f.apply(f.member("export-regulator").SignChange(&pb.RegistryChange{Actor: "export-regulator", OccurredAt: timestamppb.New(f.now),
		Change: &pb.RegistryChange_SetPolicy{SetPolicy: pol}}))[0]; r.Err == nil {
		t.Fatal("an older policy version was accepted")
	}
	f.must(f.sign("acme-gpu", mfd, "GPU-P2"))
	f.must(f.sign("acme-gpu", ship, "GPU-P2", to("eu-dist")))
	fs := f.findings(f.now, pb.FindingKind_FINDING_KIND_RESTRICTED_DESTINATION)
	if len(fs) != 1 || fs[0].GetPolicyVersion() != 2 {
		t.Fatalf("findings under policy 2: %v", fs)
	}
}

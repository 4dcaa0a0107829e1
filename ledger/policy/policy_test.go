package policy_test

import (
	"strings"
	"testing"

	"github.com/gpuledger/gpuledger/ledger/policy"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
)

func TestDefault(t *testing.T) {
	p, err := policy.New(policy.Default())
	if err != nil {
		t.Fatal(err)
	}
	for c, want := range map[string]pb.CountryClass{
		"CN": pb.CountryClass_COUNTRY_CLASS_RESTRICTED, "IR": pb.CountryClass_COUNTRY_CLASS_RESTRICTED,
		"SG": pb.CountryClass_COUNTRY_CLASS_WATCH, "SA": pb.CountryClass_COUNTRY_CLASS_LICENSED,
		"DE": pb.CountryClass_COUNTRY_CLASS_UNSPECIFIED, "US": pb.CountryClass_COUNTRY_CLASS_UNSPECIFIED,
	} {
		if got := p.Class(c); got != want {
			t.Errorf("Class(%s) = %v, want %v", c, got, want)
		}
	}
	if p.Version() != 1 || p.ClockSkew().Minutes() != 10 {
		t.Errorf("version %d, clock skew %v", p.Version(), p.ClockSkew())
	}
}

func TestParseRejects(t *testing.T) {
	valid := `"version":"2","handoffWindow":"60s","silenceInstalled":"60s","silenceInCustody":"60s","clockSkew":"60s","maxSpeedKmh":900`
	for _, tc := range []struct{ doc, want string }{
		{`{` + strings.Replace(valid, `"version":"2",`, ``, 1) + `}`, "version"},
		{`{` + valid + `,"countries":[{"country":"de","class":"COUNTRY_CLASS_WATCH"}]}`, "alpha-2"},
		{`{` + valid + `,"countries":[{"country":"DE"},{"country":"DE"}]}`, "twice"},
		{`{` + strings.Replace(valid, `"clockSkew":"60s",`, ``, 1) + `}`, "clock_skew"},
		{`{` + strings.Replace(valid, `,"maxSpeedKmh":900`, ``, 1) + `}`, "max_speed_kmh"},
		{`{"version":`, "parse policy"},
	} {
		if _, err := policy.Parse([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error about %s", tc.doc, err, tc.want)
		}
	}
	if _, err := policy.Parse([]byte(`{` + valid + `}`)); err != nil {
		t.Errorf("Parse(valid) = %v", err)
	}
}

package custody_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/gpuledger/gpuledger/ledger/custody"
	"github.com/gpuledger/gpuledger/ledger/geo"
)

// assigned is the country specification's second half: one of the ISO
// 3166-1 codes ledger/geo ships (checked against CLDR there).
func assigned(s string) bool {
	_, ok := geo.Country(s)
	return countrySpec.MatchString(s) && ok
}

// The validators are hand-written for speed; these regular expressions are
// the specification they are checked against.
var (
	serialSpec      = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,64}$`)
	participantSpec = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	countrySpec     = regexp.MustCompile(`^[A-Z]{2}$`)
)

func TestValidatorsMatchSpec(t *testing.T) {
	inputs := []string{"", "a", "ab", "-ab", "a-", "A1", "GPU-0001", "gpu 1", "x/y:z.w_v", "DE", "de", "D", "DEU", "é", "BC", "XK", "ZZ", "SG",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("A", 64), strings.Repeat("A", 65), "a\x00b"}
	for _, in := range inputs {
		if got, want := custody.ValidSerial(in), serialSpec.MatchString(in); got != want {
			t.Errorf("ValidSerial(%q) = %v, want %v", in, got, want)
		}
		if got, want := custody.ValidParticipantID(in), participantSpec.MatchString(in); got != want {
			t.Errorf("ValidParticipantID(%q) = %v, want %v", in, got, want)
		}
		if got, want := custody.ValidCountry(in), assigned(in); got != want {
			t.Errorf("ValidCountry(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzValidators(f *testing.F) {
	f.Add("GPU-0001")
	f.Add("acme-gpu")
	f.Fuzz(func(t *testing.T, in string) {
		if custody.ValidSerial(in) != serialSpec.MatchString(in) ||
			custody.ValidParticipantID(in) != participantSpec.MatchString(in) ||
			custody.ValidCountry(in) != assigned(in) {
			t.Fatalf("validators disagree with the specification on %q", in)
		}
	})
}

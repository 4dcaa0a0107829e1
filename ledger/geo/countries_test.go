package geo_test

import (
	"slices"
	"testing"

	"github.com/gpuledger/gpuledger/ledger/geo"
	"golang.org/x/text/language"
)

// CLDR (through x/text) knows more regions than ISO 3166-1 assigns: these are
// its exceptionally reserved (AC, CP, DG, EA, IC, TA, UK, EU-like EZ, UN),
// transitionally reserved or deleted (AN, BU, CS, DD, DY, FQ, FX, HV, JT, MI,
// NH, NQ, NT, PC, PU, PZ, RH, SU, TP, VD, WK, YD, YU, ZR), indeterminately
// reserved or user-assigned (CQ, XK) codes. None of them is a country here.
var notISO = []string{"AC", "AN", "BU", "CP", "CQ", "CS", "CT", "DD", "DG", "DY", "EA", "EZ", "FQ", "FX", "HV",
	"IC", "JT", "MI", "NH", "NQ", "NT", "PC", "PU", "PZ", "RH", "SU", "TA", "TP", "UK", "UN", "VD", "WK", "XK",
	"YD", "YU", "ZR"}

// TestCountriesAgainstCLDR checks the shipped ISO 3166-1 list against an
// independent registry: every code CLDR calls a country is ours unless it is
// one of the reserved codes above, and every code of ours is one CLDR knows.
func TestCountriesAgainstCLDR(t *testing.T) {
	n := 0
	for a := byte('A'); a <= 'Z'; a++ {
		for b := byte('A'); b <= 'Z'; b++ {
			code := string([]byte{a, b})
			r, err := language.ParseRegion(code)
			cldr := err == nil && r.String() == code && r.IsCountry() && !slices.Contains(notISO, code)
			_, ours := geo.Country(code)
			if ours != cldr {
				t.Errorf("Country(%q) known = %v; CLDR says %v", code, ours, cldr)
			}
			if ours {
				n++
			}
		}
	}
	if n != 249 {
		t.Errorf("%d countries; ISO 3166-1 assigns 249", n)
	}
	for _, c := range []string{"ZZ", "XX", "XK", "EU", "de", "D", "DEU", ""} {
		if _, ok := geo.Country(c); ok {
			t.Errorf("Country(%q) is known; want unknown", c)
		}
	}
}

// Every centroid is of a country, and every country but the scattered US
// Minor Outlying Islands has one, so that travel can be judged anywhere.
func TestCentroidsCoverCountries(t *testing.T) {
	for a := byte('A'); a <= 'Z'; a++ {
		for b := byte('A'); b <= 'Z'; b++ {
			code := string([]byte{a, b})
			_, country := geo.Country(code)
			_, centroid := geo.Centroid(code)
			if centroid && !country {
				t.Errorf("centroid for %s, which is not a country", code)
			}
			if country && !centroid && code != "UM" {
				t.Errorf("no centroid for country %s", code)
			}
		}
	}
}

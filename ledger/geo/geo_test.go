package geo_test

import (
	"math"
	"testing"

	"github.com/gpuledger/gpuledger/ledger/geo"
)

// Fixed vectors: the integer distances every node must compute, bit for bit.
// (Changing them changes which entries are flagged: a consensus change.)
func TestDistanceVectors(t *testing.T) {
	fra := geo.Point{LatE6: 50_110_000, LngE6: 8_680_000}
	tpe := geo.Point{LatE6: 25_033_000, LngE6: 121_565_000}
	iad := geo.Point{LatE6: 39_040_000, LngE6: -77_490_000}
	tests := []struct {
		a, b geo.Point
		want int64
	}{
		{fra, fra, 0},
		{fra, tpe, 8553787},
		{fra, iad, 6264662},
		{tpe, iad, 10655642},
		{geo.Point{LatE6: 0, LngE6: 179_900_000}, geo.Point{LatE6: 0, LngE6: -179_900_000}, 22237},
		{geo.Point{LatE6: 90_000_000}, geo.Point{LatE6: -90_000_000}, 12742016},
	}
	for _, tc := range tests {
		if got := geo.DistanceM(tc.a, tc.b); got != tc.want {
			t.Errorf("DistanceM(%v, %v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// The integer chord agrees with a float64 reference to within ten metres per
// thousand kilometres, and never exceeds the great-circle distance.
func TestAgainstFloatReference(t *testing.T) {
	const r = 6371008.0
	for lat1 := int32(-80_000_000); lat1 <= 80_000_000; lat1 += 20_000_000 {
		for lng := int32(-170_000_000); lng <= 170_000_000; lng += 34_000_000 {
			a, b := geo.Point{LatE6: lat1, LngE6: 10_000_000}, geo.Point{LatE6: -lat1 / 2, LngE6: lng}
			rad := func(e6 int32) float64 { return float64(e6) / 1e6 * math.Pi / 180 }
			x1, y1, z1 := math.Cos(rad(a.LatE6))*math.Cos(rad(a.LngE6)), math.Cos(rad(a.LatE6))*math.Sin(rad(a.LngE6)), math.Sin(rad(a.LatE6))
			x2, y2, z2 := math.Cos(rad(b.LatE6))*math.Cos(rad(b.LngE6)), math.Cos(rad(b.LatE6))*math.Sin(rad(b.LngE6)), math.Sin(rad(b.LatE6))
			chord := r * math.Sqrt((x1-x2)*(x1-x2)+(y1-y2)*(y1-y2)+(z1-z2)*(z1-z2))
			arc := 2 * r * math.Asin(chord/(2*r))
			got := float64(geo.DistanceM(a, b))
			if math.Abs(got-chord) > 1+chord/1e5 || got > arc+1 {
				t.Errorf("DistanceM(%v, %v) = %.0f; chord %.0f, arc %.0f", a, b, got, chord, arc)
			}
		}
	}
}

func TestCentroids(t *testing.T) {
	for _, c := range []string{"DE", "US", "CN", "SG", "TW", "ZW"} {
		if _, ok := geo.Centroid(c); !ok {
			t.Errorf("no centroid for %s", c)
		}
	}
	if _, ok := geo.Centroid("XX"); ok {
		t.Error("centroid for XX")
	}
}

package custody

import (
	"fmt"
	"time"

	"github.com/gpuledger/gpuledger/ledger/geo"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
)

// MinTravelM is the distance below which no speed is judged: moves within a
// metropolitan area, and the imprecision of registered coordinates.
const MinTravelM = 50_000

// place is where an event happened, as precisely as known.
func place(l *pb.Location) (p geo.Point, exact, ok bool) {
	if l.LatitudeE6 != nil && l.LongitudeE6 != nil {
		return geo.Point{LatE6: l.GetLatitudeE6(), LngE6: l.GetLongitudeE6()}, true, true
	}
	p, ok = geo.Centroid(l.GetCountry())
	return p, false, ok
}

// impossibleTravel reports whether moving from where the parties with
// standing last placed the serial (SerialState.location at custody_at) to ev
// needs a speed above maxKmh. Points are the events' coordinates, else their
// countries' centroids; two events in one country are not judged unless both
// have coordinates (a centroid says nothing about where in the country).
// Integer arithmetic only: every node decides alike.
func impossibleTravel(st *pb.SerialState, ev *pb.CustodyEvent, maxKmh uint32) (string, bool) {
	if st.GetLocation() == nil || st.GetCustodyAt() == nil || maxKmh == 0 {
		return "", false
	}
	a, aExact, okA := place(st.GetLocation())
	b, bExact, okB := place(ev.GetLocation())
	if !okA || !okB || (st.GetLocation().GetCountry() == ev.GetLocation().GetCountry() && !(aExact && bExact)) {
		return "", false
	}
	d := geo.DistanceM(a, b)
	if d < MinTravelM {
		return "", false
	}
	secs := ev.GetOccurredAt().GetSeconds() - st.GetCustodyAt().GetSeconds()
	if secs < 0 {
		secs = 0
	}
	// d/secs > maxKmh km/h  <=>  d * 3600 > maxKmh * 1000 * secs (metres, seconds).
	if d*3600 <= int64(maxKmh)*1000*secs {
		return "", false
	}
	speed := "instantly"
	if secs > 0 {
		speed = fmt.Sprintf("at %d km/h", d*3600/(secs*1000))
	}
	return fmt.Sprintf("moved %d km from %s to %s in %s, %s (limit %d km/h)", d/1000, placeName(st.GetLocation()),
		placeName(ev.GetLocation()), time.Duration(secs)*time.Second, speed, maxKmh), true
}

// siteDistance is how far an event's coordinates are from the registered site
// it names, when both have coordinates.
func siteDistance(l *pb.Location, s *pb.Site) (int64, bool) {
	if l.LatitudeE6 == nil || l.LongitudeE6 == nil || s.LatitudeE6 == nil || s.LongitudeE6 == nil {
		return 0, false
	}
	return geo.DistanceM(geo.Point{LatE6: l.GetLatitudeE6(), LngE6: l.GetLongitudeE6()},
		geo.Point{LatE6: s.GetLatitudeE6(), LngE6: s.GetLongitudeE6()}), true
}

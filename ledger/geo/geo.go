// Package geo computes distances between points on Earth with integer
// arithmetic only, so that every node, on any CPU, flags the same
// IMPOSSIBLE_TRAVEL. Coordinates are micro-degrees; sines and cosines come
// from a 30-iteration CORDIC in Q30 fixed point with constants computed once
// (atan(2^-i), the CORDIC gain, π) and written below as integers.
//
// The distance is the chord — the straight line through the Earth — between
// the points: a lower bound of the great-circle distance (within 1% below
// 2,000 km, 10% at 9,000 km), so a speed computed from it never overstates
// how fast a GPU must have moved.
package geo

import (
	"bufio"
	_ "embed"
	"math/bits"
	"strconv"
	"strings"
)

// Point is a position in micro-degrees.
type Point struct {
	LatE6, LngE6 int32
}

const (
	q            = 30
	one          = int64(1) << q
	piQ30        = 3373259426
	halfPiQ30    = 1686629713
	cordicGainQ  = 652032874
	earthRadiusM = 6371008 // mean Earth radius (IUGG), metres
)

var atanQ30 = [31]int64{843314857, 497837829, 263043837, 133525159, 67021687, 33543516, 16775851, 8388437,
	4194283, 2097149, 1048576, 524288, 262144, 131072, 65536, 32768, 16384, 8192, 4096, 2048, 1024, 512, 256,
	128, 64, 32, 16, 8, 4, 2, 1}

// radians converts micro-degrees to Q30 radians.
func radians(e6 int32) int64 { return int64(e6) * piQ30 / 180_000_000 }

// sincos returns sin and cos of a Q30 angle in [-π, π], in Q30.
func sincos(theta int64) (sin, cos int64) {
	neg := false
	switch { // reduce to [-π/2, π/2]: sin(π-θ) = sin θ, cos(π-θ) = -cos θ
	case theta > halfPiQ30:
		theta, neg = piQ30-theta, true
	case theta < -halfPiQ30:
		theta, neg = -piQ30-theta, true
	}
	x, y, z := int64(cordicGainQ), int64(0), theta
	for i, a := range atanQ30 {
		if z >= 0 {
			x, y, z = x-(y>>i), y+(x>>i), z-a
		} else {
			x, y, z = x+(y>>i), y-(x>>i), z+a
		}
	}
	if neg {
		x = -x
	}
	return y, x
}

// unit returns the point's unit vector in Q30.
func unit(p Point) (x, y, z int64) {
	sinLat, cosLat := sincos(radians(p.LatE6))
	sinLng, cosLng := sincos(radians(p.LngE6))
	return cosLat * cosLng >> q, cosLat * sinLng >> q, sinLat
}

// DistanceM returns the chord distance between two points, in metres.
func DistanceM(a, b Point) int64 {
	ax, ay, az := unit(a)
	bx, by, bz := unit(b)
	// Q30 differences are below 2^31; square them in Q20 to stay in 64 bits.
	dx, dy, dz := (ax-bx)>>10, (ay-by)>>10, (az-bz)>>10
	chordQ20 := isqrt(uint64(dx*dx + dy*dy + dz*dz))
	return int64(chordQ20) * earthRadiusM >> 20
}

// isqrt returns the integer square root of n.
func isqrt(n uint64) uint64 {
	if n < 2 {
		return n
	}
	x := uint64(1) << ((bits.Len64(n) + 1) / 2)
	for {
		y := (x + n/x) / 2
		if y >= x {
			return x
		}
		x = y
	}
}

//go:embed centroids.csv
var centroidsCSV string

var centroids = func() map[string]Point {
	m := make(map[string]Point)
	sc := bufio.NewScanner(strings.NewReader(centroidsCSV))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.SplitN(line, ",", 4)
		lat, err1 := strconv.ParseInt(f[1], 10, 32)
		lng, err2 := strconv.ParseInt(f[2], 10, 32)
		if len(f) < 3 || err1 != nil || err2 != nil {
			panic("geo: bad centroid line " + line)
		}
		m[f[0]] = Point{int32(lat), int32(lng)}
	}
	return m
}()

// Centroid returns a country's centroid (ISO 3166-1 alpha-2) and whether it
// is known.
func Centroid(country string) (Point, bool) {
	p, ok := centroids[country]
	return p, ok
}

//go:embed countries.csv
var countriesCSV string

var countries = func() map[string]string {
	m := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(countriesCSV))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		code, name, ok := strings.Cut(line, ",")
		if !ok || len(code) != 2 {
			panic("geo: bad country line " + line)
		}
		m[code] = name
	}
	return m
}()

// Country returns the English short name of an ISO 3166-1 alpha-2 country
// code and whether the code is an officially assigned one. Codes are upper
// case; reserved and user-assigned codes (XK, EU, ZZ) are not countries.
func Country(code string) (name string, ok bool) {
	name, ok = countries[code]
	return name, ok
}

//go:build race

package simulate_test

// raceDetector is true in a build with the race detector, which runs the
// simulation about six times slower; `make test` then simulates fewer
// serials, and CI runs the full size without it (make test-simulate).
const raceDetector = true

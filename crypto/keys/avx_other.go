//go:build !amd64

package keys

// clearUpper has nothing to clear off amd64 (see avx_amd64.go).
func clearUpper() {}

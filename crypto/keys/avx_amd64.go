package keys

import (
	"os"

	"golang.org/x/sys/cpu"
)

// circl's AVX2 ML-DSA code (v1.6.5, sign/internal/dilithium/amd64.s)
// returns without VZEROUPPER, leaving the upper halves of the YMM
// registers dirty. On Intel cores, SSE code that runs next — Go's SHA-256
// among it — then pays the AVX-to-SSE transition (or false-dependency)
// penalty on every instruction until something clears them. clearUpper
// does, after every ML-DSA-65 call; where the CPU has no AVX there is
// nothing to clear (and VZEROUPPER would not execute).
//
// GPULEDGER_NO_VZEROUPPER=1 turns the clearing off, to measure what it
// saves (docs/performance.md); nothing else should set it.
var hasAVX = cpu.X86.HasAVX && os.Getenv("GPULEDGER_NO_VZEROUPPER") != "1"

//go:noescape
func vzeroupper()

func clearUpper() {
	if hasAVX {
		vzeroupper()
	}
}

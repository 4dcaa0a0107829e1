package ledger_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection enforces the layering: the ledger and crypto
// packages never depend on gRPC, gRPC status or raft (node/ adapts them).
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/gpuledger/gpuledger/ledger/...", "github.com/gpuledger/gpuledger/crypto/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"google.golang.org/grpc", "github.com/hashicorp/raft"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("ledger/ or crypto/ depends on %s", dep)
			}
		}
	}
}

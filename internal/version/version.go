// Package version says which build of gpuledger is running: the module
// version and the commit it was built from.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Commit is the commit the binary was built from, set at link time by the
// Makefile (-ldflags "-X github.com/gpuledger/gpuledger/internal/version.Commit=...");
// when it is empty, the build's VCS stamp is used, if any.
var Commit string

// String returns "VERSION (commit C, GOVERSION)" for --version.
func String() string {
	v, commit := "(devel)", Commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && commit == "" {
				commit = s.Value
			}
			if s.Key == "vcs.modified" && s.Value == "true" && Commit == "" {
				commit += "+modified"
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s)", v, commit, runtime.Version())
}

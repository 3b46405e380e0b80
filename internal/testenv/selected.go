package testenv

import "flag"

// NoTestSelected reports a test binary run that selects no test: -run '^$'
// without -bench or -fuzz (how hack/test.sh compiles every test binary in
// parallel before running them one package at a time), or -list. A TestMain
// then skips its setup (a control plane, binaries, network namespaces): it
// would test nothing, and a dozen started at once on 2 cores slow the
// compile step down (and one timing out under that load failed it).
func NoTestSelected() bool {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		return true
	}
	// -run '^$' -bench (or -fuzz) runs benchmarks (or a fuzz target), which
	// may need the setup.
	for _, name := range []string{"test.bench", "test.fuzz"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	f := flag.Lookup("test.run")
	return f != nil && f.Value.String() == "^$"
}

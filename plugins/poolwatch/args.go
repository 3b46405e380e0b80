package poolwatch

import (
	"fmt"
	"strings"
)

// Args are the parsed arguments of a plugin line such as
// `ippool-lease: default/net1 snapshot=/var/lib/vm-dhcp/snapshot.json`.
type Args struct {
	Namespace string
	Name      string
	Options   map[string]string
}

// ParseArgs parses `<namespace>/<name> [key=value ...]` as CoreDHCP hands it
// over (already split on spaces). Keys not in allowed are an error, so a
// typo in the config fails the start instead of being ignored.
func ParseArgs(plugin string, args []string, allowed ...string) (Args, error) {
	if len(args) == 0 {
		return Args{}, fmt.Errorf("%s: want <namespace>/<name> [key=value ...], got no arguments", plugin)
	}
	ns, name, ok := strings.Cut(args[0], "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return Args{}, fmt.Errorf("%s: first argument %q: want <namespace>/<name>", plugin, args[0])
	}
	a := Args{Namespace: ns, Name: name, Options: map[string]string{}}
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return Args{}, fmt.Errorf("%s: argument %q: want key=value", plugin, kv)
		}
		known := false
		for _, al := range allowed {
			known = known || al == k
		}
		if !known {
			return Args{}, fmt.Errorf("%s: unknown option %q (known: %s)", plugin, k, strings.Join(allowed, ", "))
		}
		if _, dup := a.Options[k]; dup {
			return Args{}, fmt.Errorf("%s: option %q given twice", plugin, k)
		}
		a.Options[k] = v
	}
	return a, nil
}

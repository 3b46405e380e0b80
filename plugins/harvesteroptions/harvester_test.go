package harvesteroptions

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// TestHarvesterMaxOptionsServed (issue 14): the IPPool written for
// Harvester with every option list at its schema's maximum and entries no
// option can carry (test/manifests/harvester-ippool-max-options.yaml, which
// the webhook admits with warnings) is served with what fits: the
// addresses, the resolved NTP names, the valid search domains, an infinite
// lease. What cannot be sent is left out, never looked up when it is no
// host name, and logged once however often the names are resolved again.
func TestHarvesterMaxOptionsServed(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "test", "manifests", "harvester-ippool-max-options.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ipp v1alpha1.IPPool
	if err := yaml.UnmarshalStrict(b, &ipp); err != nil {
		t.Fatal(err)
	}
	pool, err := poolwatch.FromIPPool(&ipp)
	if err == nil || !strings.Contains(err.Error(), "dns.google") || !strings.Contains(err.Error(), "bad_label.example.com") {
		t.Errorf("entries skipped: %v; want dns.google and bad_label.example.com reported", err)
	}
	o := New(func() *poolwatch.Pool { return pool })

	var mu sync.Mutex
	var looked, logged []string
	lookup := func(_ context.Context, _, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		looked = append(looked, host)
		if host == "pool.ntp.org." {
			return []netip.Addr{netip.MustParseAddr("192.0.2.123"), netip.MustParseAddr("192.0.2.124")}, nil
		}
		return nil, errors.New("no such host")
	}
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{})
	for range 3 { // three pool changes or refreshes
		o.ResolveOnce(context.Background(), lookup, log)
	}
	if slices.Contains(looked, "ntp_server") {
		t.Errorf("looked up ntp_server, which is no host name: %v", looked)
	}
	if len(logged) != 2 || !strings.Contains(strings.Join(logged, "\n"), `"ntp"="ntp_server"`) ||
		!strings.Contains(strings.Join(logged, "\n"), `"ntp"="time.example.com"`) {
		t.Errorf("logged %d lines, want ntp_server and time.example.com once each:\n%s", len(logged), strings.Join(logged, "\n"))
	}

	resp := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), o.Handle)
	if got := ipStrings(resp.DNS()); got != "192.168.110.1 1.1.1.1" {
		t.Errorf("DNS %s, want 192.168.110.1 1.1.1.1 (dns.google left out)", got)
	}
	if got := ipStrings(resp.NTPServers()); got != "192.0.2.123 192.0.2.124 192.168.110.1" {
		t.Errorf("NTP %s, want pool.ntp.org.'s addresses and 192.168.110.1", got)
	}
	search := resp.DomainSearch()
	if search == nil || len(search.Labels) != 39 || search.Labels[36] != "team-37.corp.example.com" || search.Labels[37] != "corp.example.com" {
		t.Errorf("search list %v, want the 39 valid names", search)
	}
	if lt := resp.IPAddressLeaseTime(0); lt.Seconds() != 4294967295 {
		t.Errorf("lease time %v, want 4294967295 s (infinite)", lt)
	}
	// Within an Ethernet frame; a client that takes less (576 bytes without
	// option 57) gets the options it asked for first (ippoollease's fit).
	if n := len(resp.ToBytes()); n > 1500-28 {
		t.Errorf("reply of %d bytes does not fit a 1500-byte frame", n)
	}
}

func ipStrings[T interface{ String() string }](ips []T) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, " ")
}

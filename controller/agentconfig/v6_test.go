package agentconfig

import (
	"strings"
	"testing"
)

func TestRenderDualStackAndIPv6Only(t *testing.T) {
	duid := ServerDUIDMAC("default", "example")
	if duid != ServerDUIDMAC("default", "example") || duid == ServerDUIDMAC("default", "other") || duid[1] != '2' && duid[1] != '6' && duid[1] != 'a' && duid[1] != 'e' {
		t.Fatalf("ServerDUIDMAC = %s: want stable, per pool, locally administered unicast", duid)
	}
	v6 := `server6:
  listen:
    - "[ff02::1:2%eth1]:547"
  plugins:
    - server_id: LL ` + duid + `
    - harvester-options: default/example
    - ippool-lease: default/example snapshot=/var/lib/vm-dhcp/snapshot.json
    - router-advertisement: default/example interface=eth1
`
	v4, err := Render(Params{ServerIP: "192.168.100.2", PoolNamespace: "default", PoolName: "example"})
	if err != nil {
		t.Fatal(err)
	}
	dual, err := Render(Params{ServerIP: "192.168.100.2", ServerDUID: duid, PoolNamespace: "default", PoolName: "example"})
	if err != nil || dual != v4+v6 {
		t.Fatalf("dual-stack config (%v):\n%s\nwant the IPv4 one followed by\n%s", err, dual, v6)
	}
	only, err := Render(Params{ServerDUID: duid, PoolNamespace: "default", PoolName: "example"})
	if err != nil || only != v6 {
		t.Fatalf("IPv6-only config (%v):\n%s", err, only)
	}
	for _, p := range []Params{
		{PoolNamespace: "default", PoolName: "example"},                                        // neither family
		{ServerDUID: "02:00:00:00:00:0G", PoolNamespace: "default", PoolName: "example"},       // not a MAC
		{ServerIP: "fd00::2", ServerDUID: duid, PoolNamespace: "default", PoolName: "example"}, // IPv6 server IP in server4
	} {
		if _, err := Render(p); err == nil || !strings.Contains(err.Error(), "default/example") {
			t.Errorf("Render(%+v) = %v, want an error naming the pool", p, err)
		}
	}
}

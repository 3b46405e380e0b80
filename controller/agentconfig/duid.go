package agentconfig

import (
	"crypto/sha256"
	"net"
)

// ServerDUIDMAC is the link-layer address of a pool's DHCPv6 server DUID
// (DUID-LL): derived from the pool's namespace and name, so it stays the
// same across agent restarts and reschedules (clients renew with the server
// identifier they were given), and locally administered so it never names
// a real NIC.
func ServerDUIDMAC(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	hw := net.HardwareAddr(sum[:6])
	hw[0] = hw[0]&^0x01 | 0x02 // unicast, locally administered
	return hw.String()
}

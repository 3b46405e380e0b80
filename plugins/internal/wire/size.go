package wire

import (
	"bytes"
	"encoding/binary"
	"slices"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Sizes of a DHCPv4 message on the wire (RFC 2131 section 2).
const (
	// MinMaxMessageSize is the smallest IP datagram every client must
	// accept (RFC 2131 section 2, RFC 2132 9.10): a 312-byte options field.
	MinMaxMessageSize = 576
	// DefaultMTU bounds replies when the pool sets no MTU: Ethernet's.
	DefaultMTU = 1500
	// ipUDPHeaders is what an IP datagram adds to the DHCP message.
	ipUDPHeaders = 20 + 8
	// fixedLen is the BOOTP header plus the magic cookie.
	fixedLen = 236 + 4
	// bootpMinLen is the length the library pads every message to.
	bootpMinLen = 300
)

// MaxReplySize is the largest DHCP message (without IP and UDP headers) a
// reply to req may be: the client's option 57 if it sent one, never less
// than RFC 2131's 576-byte floor, never more than the link's MTU (the pool's,
// else Ethernet's). Option 57 is read as the size of the IP datagram, as ISC
// dhcpd and udhcpc do: read as the DHCP message alone it would allow 28
// bytes more, which a client meaning the datagram could not take.
func MaxReplySize(req *dhcpv4.DHCPv4, mtu uint16) int {
	limit := MinMaxMessageSize
	if v := req.Options.Get(dhcpv4.OptionMaximumDHCPMessageSize); len(v) == 2 {
		limit = max(limit, int(binary.BigEndian.Uint16(v)))
	}
	link := DefaultMTU
	if mtu != 0 {
		link = int(mtu)
	}
	return max(min(limit, link), MinMaxMessageSize) - ipUDPHeaders
}

// Size is the length of m on the wire, as m.ToBytes() would write it,
// without encoding it.
func Size(m *dhcpv4.DHCPv4) int { return max(unpadded(m), bootpMinLen) }

// unpadded is the length of m before the library pads it to BOOTP's 300.
func unpadded(m *dhcpv4.DHCPv4) int {
	n := fixedLen + 1 // options end with 255
	for _, v := range m.Options {
		n += optionSize(len(v))
	}
	return n
}

// optionSize is the wire length of an option with n bytes of data: long
// options are split into 255-byte pieces (RFC 3396), each with its code and
// length.
func optionSize(n int) int {
	if n == 0 {
		return 2
	}
	return n + 2*((n+254)/255)
}

// Essential options are never dropped to fit: without them the reply is
// not a usable DHCP answer (type, server, lease, mask, router), or it would
// break a rule of its own (RFC 3046 2.2 and RFC 6842: relay agent
// information and client identifier are echoed in every reply).
var essential = []dhcpv4.OptionCode{
	dhcpv4.OptionDHCPMessageType, dhcpv4.OptionServerIdentifier, dhcpv4.OptionIPAddressLeaseTime,
	dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier,
}

// Fit drops options of resp until it is at most limit bytes long, and
// returns the codes dropped, in the order they were. Lowest priority goes
// first: options the client did not ask for (highest code first), then
// those it asked for from the end of its parameter request list, which
// RFC 2132 9.8 lets a client order by preference. Essential options stay
// even if the reply is then still too long (it can only be with a relay
// agent information or client identifier far beyond any real one).
func Fit(req, resp *dhcpv4.DHCPv4, limit int) []uint8 {
	size := unpadded(resp) // padding never matters: limit is at least 548
	if size <= limit {
		return nil
	}
	prl := req.Options.Get(dhcpv4.OptionParameterRequestList)
	var unasked, asked []uint8
	for code := range resp.Options {
		if isEssential(code) {
			continue
		}
		if bytes.IndexByte(prl, code) >= 0 {
			asked = append(asked, code)
		} else {
			unasked = append(unasked, code)
		}
	}
	slices.SortFunc(unasked, func(a, b uint8) int { return int(b) - int(a) })
	slices.SortFunc(asked, func(a, b uint8) int { return bytes.IndexByte(prl, b) - bytes.IndexByte(prl, a) })
	var dropped []uint8
	for _, code := range append(unasked, asked...) {
		if size <= limit {
			break
		}
		size -= optionSize(len(resp.Options[code]))
		delete(resp.Options, code)
		dropped = append(dropped, code)
	}
	return dropped
}

func isEssential(code uint8) bool {
	for _, e := range essential {
		if e.Code() == code {
			return true
		}
	}
	return false
}

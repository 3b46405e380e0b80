package wire

import "github.com/insomniacslk/dhcp/dhcpv4"

// RawMessageType is option 53 of a DHCPv4 message still in wire form, found
// by walking the options without decoding the message; MessageTypeNone
// when the message is not DHCP or has no valid option 53. Options carried
// in sname or file (overload, RFC 2132 9.3) are not looked at: clients put
// option 53 in the options field.
func RawMessageType(msg []byte) dhcpv4.MessageType {
	const optionsAt = 236 + 4
	if len(msg) < optionsAt || msg[236] != 99 || msg[237] != 130 || msg[238] != 83 || msg[239] != 99 {
		return dhcpv4.MessageTypeNone
	}
	for i := optionsAt; i < len(msg); {
		code := msg[i]
		switch code {
		case 0: // pad
			i++
			continue
		case 255: // end
			return dhcpv4.MessageTypeNone
		}
		if i+1 >= len(msg) {
			return dhcpv4.MessageTypeNone
		}
		n := int(msg[i+1])
		if i+2+n > len(msg) {
			return dhcpv4.MessageTypeNone
		}
		if code == 53 {
			if n != 1 {
				return dhcpv4.MessageTypeNone
			}
			return dhcpv4.MessageType(msg[i+2])
		}
		i += 2 + n
	}
	return dhcpv4.MessageTypeNone
}

// Package dnsname checks DNS names and encodes them as DHCP option 119, for
// the agent (which sends them) and the webhook (which sizes and warns about
// them): one encoder, so that what the webhook admits is what the agent sends.
package dnsname

import (
	"fmt"
	"strings"
)

// DNS name limits (RFC 1035 2.3.4).
const (
	MaxLabelLen = 63
	// MaxNameLen is the longest name in text form without the trailing
	// dot; it encodes in 255 bytes.
	MaxNameLen = 253
)

// Check says why name cannot be sent in option 15 or 119, or nil.
// One trailing dot (the fully qualified form) is allowed; letters, digits
// and hyphens only (RFC 1035 2.3.1, as relaxed by RFC 1123 for a leading
// digit).
func Check(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return fmt.Errorf("%q is empty", name)
	}
	if len(n) > MaxNameLen {
		return fmt.Errorf("%q is %d characters long, more than %d", name, len(n), MaxNameLen)
	}
	for _, label := range strings.Split(n, ".") {
		switch {
		case label == "":
			return fmt.Errorf("%q has an empty label", name)
		case len(label) > MaxLabelLen:
			return fmt.Errorf("%q has a label of %d characters, more than %d", name, len(label), MaxLabelLen)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("%q has a label starting or ending with a hyphen", name)
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%q has the character %q, not a letter, digit or hyphen", name, c)
			}
		}
	}
	return nil
}

// SearchList encodes names as option 119 (RFC 3397): each name as RFC
// 1035 labels ending with the root, a suffix already written replaced by a
// compression pointer (offsets count from the start of the option's data,
// across RFC 3396 pieces). A trailing dot is the fully qualified form of
// the same name, not an extra empty label. Names that Check
// refuses are left out and reported; the others are encoded.
func SearchList(names []string) ([]byte, []error) {
	var (
		out  []byte
		errs []error
		// at maps a name suffix (lower case) to where it was written.
		at = map[string]int{}
	)
	for _, name := range names {
		if err := Check(name); err != nil {
			errs = append(errs, err)
			continue
		}
		labels := strings.Split(strings.TrimSuffix(name, "."), ".")
		for i := range labels {
			suffix := strings.ToLower(strings.Join(labels[i:], "."))
			if off, ok := at[suffix]; ok {
				out = append(out, 0xc0|byte(off>>8), byte(off))
				break
			}
			if len(out) <= 0x3fff {
				at[suffix] = len(out) // a pointer holds 14 bits
			}
			out = append(out, byte(len(labels[i])))
			out = append(out, labels[i]...)
			if i == len(labels)-1 {
				out = append(out, 0)
			}
		}
	}
	return out, errs
}

package v1alpha1

import (
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPv6Address is an IPv6 address in any form net/netip parses (e.g.
// fd00:100::1). Its own type, like IPv4Address, so that the schema checks
// every item of a list.
// +kubebuilder:validation:Format=ipv6
// +kubebuilder:validation:MaxLength=39
type IPv6Address string

// IPv6Config describes the IPv6 subnet of a pool and what DHCPv6 tells its
// clients. The field names follow IPv4Config (and Harvester's dual-stack
// proposal, harvester/harvester#10768, which adds an IPv6 half beside
// ipv4Config); the lifetimes replace leaseTime because a DHCPv6 address
// carries two (RFC 8415 section 21.6).
type IPv6Config struct {
	// ServerIP is the address of the pool's DHCPv6 agent on the network.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv6Config.serverIP is immutable"
	ServerIP IPv6Address `json:"serverIP"`

	// CIDR is the IPv6 prefix of the network, typically a /64, e.g. fd00:100::/64.
	// +kubebuilder:validation:MaxLength=43
	// A pattern, not isCIDR()/cidr() (Kubernetes 1.31+): the chart installs on
	// 1.30. The webhook parses the prefix and checks its length and host bits.
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9a-fA-F:]*:[0-9a-fA-F:.]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8])$')",message="spec.ipv6Config.cidr must be an IPv6 prefix such as fd00:100::/64"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv6Config.cidr is immutable"
	CIDR string `json:"cidr"`

	// Pool is the range of addresses handed out.
	Pool IPv6Pool `json:"pool"`

	// DNS servers given to clients (option 23).
	// +optional
	// +kubebuilder:validation:MaxItems=3
	DNS []IPv6Address `json:"dns,omitempty"`

	// DomainSearch list given to clients (option 24).
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	DomainSearch []string `json:"domainSearch,omitempty"`

	// NTP servers given to clients (option 56), IPv6 addresses or host names.
	// +optional
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:items:MaxLength=253
	NTP []string `json:"ntp,omitempty"`

	// PreferredLifetime of the addresses in seconds (IA Address option).
	// +optional
	PreferredLifetime *int `json:"preferredLifetime,omitempty"`

	// ValidLifetime of the addresses in seconds; at least the preferred lifetime.
	// +optional
	ValidLifetime *int `json:"validLifetime,omitempty"`

	// RouterAdvertisements makes the pool's agent send router advertisements
	// on a network that has no router of its own: guests start DHCPv6 only
	// when an RA carries the managed flag. Off by default.
	// +optional
	RouterAdvertisements *RouterAdvertisements `json:"routerAdvertisements,omitempty"`
}

// RouterAdvertisements configures the agent's router advertisements (RFC
// 4861 6.2): managed and other-configuration flags set, the pool's prefix
// on-link without SLAAC (addresses come from DHCPv6), router lifetime 0 (the
// agent forwards nothing, so it never becomes a default router).
type RouterAdvertisements struct {
	// Enabled turns the agent's router advertisements on.
	Enabled bool `json:"enabled"`

	// Interval is the longest time between unsolicited advertisements in
	// seconds (RFC 4861 MaxRtrAdvInterval, 4-1800; default 200). Router
	// solicitations are answered at once (at most one per 3 seconds).
	// +optional
	// +kubebuilder:validation:Minimum=4
	// +kubebuilder:validation:Maximum=1800
	Interval *int32 `json:"interval,omitempty"`
}

// DefaultRAInterval is RouterAdvertisements.Interval when unset, in seconds.
const DefaultRAInterval = 200

// RAInterval returns the interval between unsolicited advertisements.
func (r *RouterAdvertisements) RAInterval() int32 {
	if r == nil || r.Interval == nil {
		return DefaultRAInterval
	}
	return *r.Interval
}

// IPv6Pool is the range of IPv6 addresses a pool hands out.
type IPv6Pool struct {
	// Start is the first address of the range.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv6Config.pool.start is immutable"
	Start IPv6Address `json:"start"`

	// End is the last address of the range.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv6Config.pool.end is immutable"
	End IPv6Address `json:"end"`

	// Exclude lists addresses of the range that are never handed out.
	// +optional
	// +kubebuilder:validation:MaxItems=1024
	Exclude []IPv6Address `json:"exclude,omitempty"`
}

// IPv6Status holds the IPv6 allocations of a pool, in the shape of
// IPv4Status. Available is capped at the largest int64: a /64 range holds
// more addresses than a JSON integer can count.
type IPv6Status struct {
	// Allocated maps an address to the MAC address it is allocated to, or to
	// EXCLUDED / RESERVED.
	// +optional
	Allocated map[string]string `json:"allocated,omitempty"`
	Used      int               `json:"used"`
	Available int64             `json:"available"`

	// Owners maps an allocated address to the UID of the
	// VirtualMachineNetworkConfig it was allocated for, as
	// status.ipv4.owners does, in an IPv6-only pool. A dual-stack pool
	// leaves it out: there the IPv6 half follows the IPv4 owner of the MAC
	// (one fact, recorded once).
	// +optional
	// +mapType=atomic
	Owners map[string]string `json:"owners,omitempty"`

	// Released lists the IPv6 addresses whose previous client may still use
	// them (released, or dropped from allocated because the spec no longer
	// allows them), as status.ipv4.released does; the quarantine counts
	// from the valid lifetime instead of the lease time.
	// +optional
	// +mapType=atomic
	Released map[string]ReleasedAddress `json:"released,omitempty"`

	// ValidLifetime is the pool's valid lifetime in seconds when this status
	// was written, with the meaning status.ipv4.leaseTime has: a Released
	// entry without its own lease counts from it, a later status written
	// under a shorter one sets LongerLeasesUntil, and the agent serves at
	// most it.
	// +optional
	ValidLifetime *int64 `json:"validLifetime,omitempty"`

	// LongerLeasesUntil is set when the valid lifetime was lowered: an
	// address given before, under the longer one, may still be valid until
	// then, so an address released before it stays quarantined until it.
	// +optional
	LongerLeasesUntil *metav1.Time `json:"longerLeasesUntil,omitempty"`
}

// HasIPv4 reports whether the pool has an IPv4 half: any field of
// spec.ipv4Config set (the test omitzero uses), or no IPv6 half at all, so
// that a pool with neither is still checked (and refused) as IPv4.
func (p *IPPool) HasIPv4() bool {
	return p.Spec.IPv6Config == nil || !reflect.ValueOf(p.Spec.IPv4Config).IsZero()
}

// HasIPv6 reports whether the pool has an IPv6 half.
func (p *IPPool) HasIPv6() bool { return p.Spec.IPv6Config != nil }

// Lifetimes used when spec.ipv6Config leaves them out, in seconds.
const (
	DefaultValidLifetime     = 3600
	DefaultPreferredLifetime = DefaultValidLifetime / 2
)

// Lifetimes returns the preferred and valid lifetimes the pool's DHCPv6
// agent sends: the ones set, else the preferred is half the valid one and
// the valid one is DefaultValidLifetime (or the preferred one if longer).
// One place decides them, for the agent, the webhook and the docs.
func (c *IPv6Config) Lifetimes() (preferred, valid int) {
	switch {
	case c.PreferredLifetime != nil && c.ValidLifetime != nil:
		return *c.PreferredLifetime, *c.ValidLifetime
	case c.ValidLifetime != nil:
		return *c.ValidLifetime / 2, *c.ValidLifetime
	case c.PreferredLifetime != nil:
		return *c.PreferredLifetime, max(*c.PreferredLifetime, DefaultValidLifetime)
	}
	return DefaultPreferredLifetime, DefaultValidLifetime
}

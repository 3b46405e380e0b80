package v1alpha1

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The CRDs' CEL rules use only functions of Kubernetes 1.30 (Harvester
// v1.4's), e.g. matches() and not isCIDR() (1.31): the chart must install
// there. The webhook checks what a pattern cannot (e.g. host bits).

// Conditions of an IPPool.
const (
	// Registered: the pool is linked to its NetworkAttachmentDefinition.
	Registered ConditionType = "Registered"
	// CacheReady: the controller's IPAM for the pool is built from its status.
	CacheReady ConditionType = "CacheReady"
	// AgentReady: the pool's DHCP agent is running and ready.
	AgentReady ConditionType = "AgentReady"
	// Stopped: the pool is paused; its agent is removed, allocations kept.
	Stopped ConditionType = "Stopped"
	// AllocationsDropped: rebuilding the IPAM from the status had to drop
	// recorded allocations the spec no longer allows (e.g. an exclude added
	// while paused); their VMNetCfgs are allocated again.
	AllocationsDropped ConditionType = "AllocationsDropped"
	// StatusTooLarge: a status write was refused as too large for etcd;
	// new allocations are refused, releases go on.
	StatusTooLarge ConditionType = "StatusTooLarge"
)

// Marks that stand in status.ipv4.allocated in place of a MAC address.
const (
	// AllocatedExcluded marks an address listed in spec.ipv4Config.pool.exclude.
	AllocatedExcluded = "EXCLUDED"
	// AllocatedReserved marks the server IP and the router when they lie in the range.
	AllocatedReserved = "RESERVED"
)

// IPPool is a pool of IPv4 addresses served by DHCP on one VM network
// (a NetworkAttachmentDefinition).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ippl;ippls,scope=Namespaced
// +kubebuilder:printcolumn:name="NETWORK",type=string,JSONPath=`.spec.networkName`
// +kubebuilder:printcolumn:name="AVAILABLE",type=integer,JSONPath=`.status.ipv4.available`
// +kubebuilder:printcolumn:name="USED",type=integer,JSONPath=`.status.ipv4.used`
// +kubebuilder:printcolumn:name="REGISTERED",type=string,JSONPath=`.status.conditions[?(@.type=='Registered')].status`
// +kubebuilder:printcolumn:name="CACHEREADY",type=string,JSONPath=`.status.conditions[?(@.type=='CacheReady')].status`
// +kubebuilder:printcolumn:name="AGENTREADY",type=string,JSONPath=`.status.conditions[?(@.type=='AgentReady')].status`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPPoolSpec   `json:"spec,omitempty"`
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolSpec is what the user asks of a pool.
type IPPoolSpec struct {
	// IPv4Config is the subnet, the range and the DHCP options of the pool.
	IPv4Config IPv4Config `json:"ipv4Config,omitempty,omitzero"`

	// IPv6Config is the IPv6 half of a dual-stack pool, or the only half of
	// an IPv6-only one (ipv4Config is then left out: omitzero above).
	// +optional
	IPv6Config *IPv6Config `json:"ipv6Config,omitempty"`

	// NetworkName is the NetworkAttachmentDefinition the pool serves, as namespace/name.
	// +kubebuilder:validation:MaxLength=64
	// A bare name means default/<name>, as Harvester reads it.
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-.a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.networkName is immutable"
	NetworkName string `json:"networkName"`

	// Paused removes the pool's agent and keeps its allocations.
	// +optional
	Paused *bool `json:"paused,omitempty"`
}

// IPv4Config describes the subnet of a pool and what DHCP tells its clients.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.router) || has(self.router)",message="spec.ipv4Config.router is immutable once set"
type IPv4Config struct {
	// ServerIP is the address of the pool's DHCP agent on the network.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv4Config.serverIP is immutable"
	// +kubebuilder:validation:Format=ipv4
	// +kubebuilder:validation:MaxLength=15
	ServerIP IPv4Address `json:"serverIP"`

	// CIDR is the subnet of the network, e.g. 192.168.100.0/24.
	// +kubebuilder:validation:MaxLength=18
	// +kubebuilder:validation:XValidation:rule="self.matches('^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])[.]){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$')",message="spec.ipv4Config.cidr must be an IPv4 network such as 192.168.100.0/24"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv4Config.cidr is immutable"
	CIDR string `json:"cidr"`

	// Pool is the range of addresses handed out.
	Pool Pool `json:"pool"`

	// Router is the default gateway given to clients.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv4Config.router is immutable once set"
	// +kubebuilder:validation:Format=ipv4
	// +kubebuilder:validation:MaxLength=15
	Router IPv4Address `json:"router,omitempty"`

	// The option fields below carry only the schema limits Harvester's CRD
	// has (MaxItems of dns and ntp): every manifest its CRD admits is
	// admitted here. What the agent cannot send (an entry that is not an
	// address or host name, a label over 63 characters) is admitted with an
	// admission warning and left out of the reply; the webhook refuses only
	// options too large for any DHCP reply (webhook/wirelimits.go).

	// DNS servers given to clients (option 6), IPv4 addresses. Items are
	// plain strings, as in Harvester's schema: an entry that is not an IPv4
	// address is left out of option 6, with a warning on admission.
	// +optional
	// +kubebuilder:validation:MaxItems=3
	DNS []string `json:"dns,omitempty"`

	// DomainName given to clients (option 15).
	// +optional
	DomainName *string `json:"domainName,omitempty"`

	// DomainSearch list given to clients (option 119).
	// +optional
	DomainSearch []string `json:"domainSearch,omitempty"`

	// NTP servers given to clients (option 42), addresses or host names;
	// the agent resolves host names to their IPv4 addresses.
	// +optional
	// +kubebuilder:validation:MaxItems=4
	NTP []string `json:"ntp,omitempty"`

	// LeaseTime in seconds (option 51). Option 51 holds 32 bits and
	// 4294967295 means "infinite": a larger value is served as infinite,
	// with a warning on admission (Harvester's schema has no maximum).
	// +optional
	LeaseTime *int `json:"leaseTime,omitempty"`

	// MTU given to clients (option 26). Not in Harvester's API.
	// +optional
	// +kubebuilder:validation:Minimum=68
	// +kubebuilder:validation:Maximum=65535
	MTU *int `json:"mtu,omitempty"`

	// Routes are classless static routes given to clients (option 121).
	// Not in Harvester's API.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Routes []Route `json:"routes,omitempty"`
}

// Pool is the range of addresses a pool hands out.
type Pool struct {
	// Start is the first address of the range.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv4Config.pool.start is immutable"
	// +kubebuilder:validation:Format=ipv4
	// +kubebuilder:validation:MaxLength=15
	Start IPv4Address `json:"start"`

	// End is the last address of the range.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ipv4Config.pool.end is immutable"
	// +kubebuilder:validation:Format=ipv4
	// +kubebuilder:validation:MaxLength=15
	End IPv4Address `json:"end"`

	// Exclude lists addresses of the range that are never handed out. Any
	// string is admitted, as by Harvester: an IPv4-mapped form excludes its
	// IPv4 address, an entry that is no address excludes nothing (the
	// webhook warns).
	// +optional
	Exclude []IPv4Address `json:"exclude,omitempty"`
}

// Route is one classless static route.
type Route struct {
	// Destination network, e.g. 10.10.0.0/16.
	// +kubebuilder:validation:MaxLength=18
	// +kubebuilder:validation:XValidation:rule="self.matches('^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])[.]){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$')",message="destination must be an IPv4 network such as 10.10.0.0/16"
	Destination string `json:"destination"`
	// Gateway for the destination; must lie in the pool's CIDR.
	// +kubebuilder:validation:Format=ipv4
	// +kubebuilder:validation:MaxLength=15
	Gateway IPv4Address `json:"gateway"`
}

// IPPoolStatus is the state of a pool. status.ipv4.allocated is the source of
// truth for every allocation: a restarted controller rebuilds its IPAM from it.
type IPPoolStatus struct {
	// +optional
	LastUpdate metav1.Time `json:"lastUpdate,omitempty"`

	// +optional
	IPv4 *IPv4Status `json:"ipv4,omitempty"`

	// +optional
	IPv6 *IPv6Status `json:"ipv6,omitempty"`

	// +optional
	AgentPodRef *PodReference `json:"agentPodRef,omitempty"`

	// +optional
	Conditions []Condition `json:"conditions,omitempty"`
}

// IPv4Status holds the allocations of a pool.
type IPv4Status struct {
	// Allocated maps an address to the MAC address it is allocated to, or to
	// EXCLUDED / RESERVED. Atomic: managedFields then hold one entry for the
	// map rather than one per address, which keeps a full pool's status
	// within etcd's object size limit.
	// +optional
	// +mapType=atomic
	Allocated map[string]string `json:"allocated,omitempty"`
	Used      int               `json:"used"`
	Available int               `json:"available"`

	// Owners maps an allocated address to the UID of the
	// VirtualMachineNetworkConfig it was allocated for (a UUID written in
	// unpadded base64url, 22 characters), so that a release frees only that
	// allocation. Allocations recorded without one (by
	// Harvester's controller) are adopted by the first VMNetCfg that claims
	// their MAC. Not in Harvester's API.
	// +optional
	// +mapType=atomic
	Owners map[string]string `json:"owners,omitempty"`

	// Released lists the addresses whose previous client may still hold a
	// lease on them (released, or dropped from allocated because the spec no
	// longer allows them): they go to another MAC only when no other address
	// is free. Not in Harvester's API.
	// +optional
	// +mapType=atomic
	Released map[string]ReleasedAddress `json:"released,omitempty"`

	// LeaseTime is the pool's lease time in seconds when this status was
	// written: a Released entry without its own lease counts from it, and a
	// later status written under a shorter lease time sets
	// LongerLeasesUntil from it. The agent serves at most this lease time,
	// so a raise takes effect once the controller has recorded it. Not in
	// Harvester's API.
	// +optional
	LeaseTime *int64 `json:"leaseTime,omitempty"`

	// LongerLeasesUntil is set when the pool's lease time was lowered: a
	// lease granted before, under the longer lease time, may still run until
	// then, so an address released before it stays quarantined at least
	// until it. Not in Harvester's API.
	// +optional
	LongerLeasesUntil *metav1.Time `json:"longerLeasesUntil,omitempty"`
}

// ReleasedAddress is who released an address and when.
type ReleasedAddress struct {
	MAC string      `json:"mac"`
	At  metav1.Time `json:"at"`
	// Lease is how long after At, in seconds, the releasing client may
	// still hold its lease, when that is longer than the status's leaseTime
	// (the lease time was lowered since, or shortly before, the release);
	// absent otherwise, to keep the status small. The quarantine ends at the
	// later of At plus this lease and At plus the pool's current lease
	// time: lowering the lease time never shortens it. In a status without
	// leaseTime (written by an older version) an entry counts from the
	// current lease time.
	// +optional
	Lease *int64 `json:"lease,omitempty"`
}

// PodReference names the agent pod of a pool.
type PodReference struct {
	Namespace string    `json:"namespace,omitempty"`
	Name      string    `json:"name,omitempty"`
	Image     string    `json:"image,omitempty"`
	UID       types.UID `json:"uid,omitempty"`
}

// +kubebuilder:object:root=true

// IPPoolList is a list of IPPools.
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPPool{}, &IPPoolList{})
}

// IsPaused reports whether spec.paused is set and true.
func (p *IPPool) IsPaused() bool { return p.Spec.Paused != nil && *p.Spec.Paused }

// DefaultNetworkNamespace is the namespace of a spec.networkName written
// without one. Harvester's webhook reads a bare name as default/<name>, and
// manifests written for it rely on that.
const DefaultNetworkNamespace = "default"

// Network is spec.networkName as namespace/name: a bare name is in
// DefaultNetworkNamespace. Everything that looks up or matches a pool's
// network uses this, never the raw field.
func (p *IPPool) Network() string {
	n := p.Spec.NetworkName
	if n == "" || strings.Contains(n, "/") {
		return n
	}
	return DefaultNetworkNamespace + "/" + n
}

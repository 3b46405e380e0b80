// Package controller reconciles IPPools, VirtualMachineNetworkConfigs and
// KubeVirt VirtualMachines: it allocates addresses (the IPPool status is the
// source of truth) and runs one DHCP agent pod per active pool.
package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Labels and annotations (docs/interfaces.md).
const (
	LabelAppName           = "app.kubernetes.io/name"
	AgentAppName           = "vm-dhcp-agent"
	LabelIPPoolNamespace   = "network.harvesterhci.io/ippool-namespace"
	LabelIPPoolName        = "network.harvesterhci.io/ippool-name"
	LabelClusterNetwork    = "network.harvesterhci.io/clusternetwork"
	LabelVMName            = "harvesterhci.io/vmName"
	AnnotationMACAddresses = "harvesterhci.io/mac-address"
	AnnotationHoldUpgrade  = "network.harvesterhci.io/hold-ippool-agent-upgrade"
	AnnotationMultus       = "k8s.v1.cni.cncf.io/networks"

	// AnnotationConfigHash on the agent pod: hash of the config it was started with.
	AnnotationConfigHash = "network.harvesterhci.io/agent-config-hash"
	// AnnotationNetworkHash on the agent pod: hash of the NAD's CNI config
	// the pod's network was set up with.
	AnnotationNetworkHash = "network.harvesterhci.io/network-config-hash"
	// AnnotationSpecHash on the agent pod: hash of the rest of its desired spec.
	AnnotationSpecHash = "network.harvesterhci.io/agent-spec-hash"
	// AnnotationGeneratedHash on the ConfigMap: hash of the content the
	// controller generated. Content with another hash is the user's.
	AnnotationGeneratedHash = "network.harvesterhci.io/generated-config-hash"
	// AnnotationUserHash on the ConfigMap: the user content already reported
	// by an event, so that the event is not repeated on every reconcile.
	AnnotationUserHash = "network.harvesterhci.io/user-config-hash"

	// Finalizer on IPPools and VirtualMachineNetworkConfigs.
	Finalizer = "network.harvesterhci.io/vm-dhcp-controller"
	// HarvesterIPPoolFinalizer and HarvesterVMNetCfgFinalizer are what
	// Harvester's add-on (wrangler's OnRemove handlers of its
	// vm-dhcp-ippool-controller and vm-dhcp-vmnetcfg-controller) leaves on
	// the objects it handled. Once it is uninstalled nobody else removes
	// them, so our finalize does, or deleting a migrated object hangs.
	HarvesterIPPoolFinalizer   = "wrangler.cattle.io/vm-dhcp-ippool-controller"
	HarvesterVMNetCfgFinalizer = "wrangler.cattle.io/vm-dhcp-vmnetcfg-controller"

	ConfigKey        = "config.yaml"
	ConfigMountPath  = "/etc/coredhcp"
	SnapshotDir      = "/var/lib/vm-dhcp"
	AgentContainer   = "agent"
	AgentHealthPort  = 8080
	AgentInterface   = "eth1"
	maxPodNameLength = 63
)

// AgentPodName is the name of a pool's agent pod: <base>-agent, where base
// is a readable prefix of <pool-namespace>-<pool-name> and a hash of
// namespace/name. The hash is what makes the name unique per pool: without
// it default-prod/net and default/prod-net would share one agent. At most
// 56 characters, a valid DNS label.
func AgentPodName(pool *v1alpha1.IPPool) string { return agentBaseName(pool) + "-agent" }

// AgentConfigMapName is the name of a pool's CoreDHCP ConfigMap,
// <base>-agent-config: at most 63 characters, a valid DNS label.
func AgentConfigMapName(pool *v1alpha1.IPPool) string { return agentBaseName(pool) + "-agent-config" }

const (
	agentNameHashLen = 10 // hex digits: 40 bits, no collision in any real cluster
	// agentBaseMax leaves room for the longest suffix, "-agent-config".
	agentBaseMax = maxPodNameLength - len("-agent-config")
)

// agentBaseName is <prefix>-<hash>: the prefix is <ns>-<name> with dots
// (allowed in pool names, not in DNS labels) made dashes, cut so that the
// whole fits in agentBaseMax.
func agentBaseName(pool *v1alpha1.IPPool) string {
	sum := sha256.Sum256([]byte(pool.Namespace + "/" + pool.Name))
	hash := hex.EncodeToString(sum[:])[:agentNameHashLen]
	prefix := strings.ReplaceAll(pool.Namespace+"-"+pool.Name, ".", "-")
	if limit := agentBaseMax - 1 - len(hash); len(prefix) > limit {
		prefix = prefix[:limit]
	}
	return strings.TrimRight(prefix, "-") + "-" + hash
}

// agentLabels are the labels of a pool's agent pod and ConfigMap.
func agentLabels(pool *v1alpha1.IPPool) map[string]string {
	return map[string]string{
		LabelAppName:         AgentAppName,
		LabelIPPoolNamespace: pool.Namespace,
		LabelIPPoolName:      pool.Name,
	}
}

// ipamConfig is the part of a pool's spec its IPAM is built from.
func ipamConfig(pool *v1alpha1.IPPool) ipam.Config {
	c := pool.Spec.IPv4Config
	ex := make([]string, 0, len(c.Pool.Exclude))
	for _, e := range c.Pool.Exclude {
		ex = append(ex, string(e))
	}
	return ipam.Config{CIDR: c.CIDR, Start: string(c.Pool.Start), End: string(c.Pool.End),
		ServerIP: string(c.ServerIP), Router: string(c.Router), Exclude: ex}
}

// normalizeNetwork writes a network name as namespace/name; a bare name is
// in defaultNamespace (as multus reads it).
func normalizeNetwork(network, defaultNamespace string) string {
	if strings.Contains(network, "/") {
		return network
	}
	return defaultNamespace + "/" + network
}

func splitNetwork(network string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(network, "/")
	if !ok || ns == "" || n == "" {
		return "", "", fmt.Errorf("network name %q is not namespace/name", network)
	}
	return ns, n, nil
}

func intstrPort(p int) intstr.IntOrString { return intstr.FromInt32(int32(p)) }

package localcluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
)

// vmNetwork is the namespace holding one Linux bridge per VM network (a NAD
// such as default/example). Agents and VM NICs plug into it by veth.
type vmNetwork struct {
	netns   string
	mu      sync.Mutex
	bridges map[string]string // network name -> bridge name
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:10]
}

func (c *Cluster) startNetwork(ctx context.Context) error {
	if err := c.addNetns(ctx, c.netNS); err != nil {
		return fmt.Errorf("create the VM network namespace: %w", err)
	}
	c.network = &vmNetwork{netns: c.netNS, bridges: map[string]string{}}
	c.step("VM networks live in network namespace %s (one bridge per network)", c.netNS)
	return nil
}

// bridge returns the bridge playing network, creating it on first use.
func (n *vmNetwork) bridge(ctx context.Context, network string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if br, ok := n.bridges[network]; ok {
		return br, nil
	}
	br := "br" + shortHash(network)
	if err := ipCmd(ctx, "-n", n.netns, "link", "add", br, "type", "bridge"); err != nil {
		return "", fmt.Errorf("bridge for network %s: %w", network, err)
	}
	if err := ipCmd(ctx, "-n", n.netns, "link", "set", br, "up"); err != nil {
		return "", fmt.Errorf("bridge for network %s: %w", network, err)
	}
	n.bridges[network] = br
	return br, nil
}

// plug connects namespace ns to network with a veth whose end in ns is
// named ifname (with MAC mac, if not empty).
func (n *vmNetwork) plug(ctx context.Context, network, ns, ifname, mac string) error {
	br, err := n.bridge(ctx, network)
	if err != nil {
		return err
	}
	port := "p" + shortHash(ns+"/"+ifname)
	if err := ipCmd(ctx, "link", "add", port, "netns", n.netns, "type", "veth", "peer", "name", ifname, "netns", ns); err != nil {
		return fmt.Errorf("plug %s of %s into %s: %w", ifname, ns, network, err)
	}
	steps := [][]string{
		{"-n", n.netns, "link", "set", port, "master", br},
		{"-n", n.netns, "link", "set", port, "up"},
	}
	if mac != "" {
		steps = append(steps, []string{"-n", ns, "link", "set", ifname, "address", mac})
	}
	steps = append(steps, []string{"-n", ns, "link", "set", ifname, "up"})
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return fmt.Errorf("plug %s of %s into %s: %w", ifname, ns, network, err)
		}
	}
	return nil
}

// unplug removes the veth ifname of namespace ns (both ends go together).
func (n *vmNetwork) unplug(ctx context.Context, ns, ifname string) error {
	return ipCmd(ctx, "-n", ns, "link", "del", ifname)
}

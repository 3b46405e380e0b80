// Package agentconfig renders the CoreDHCP configuration file of one pool's
// agent. The output format is part of the project's interface
// (docs/interfaces.md) and is pinned by golden files in testdata.
package agentconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"text/template"
)

// DefaultInterface is the interface multus attaches the pool's network as.
const DefaultInterface = "eth1"

// DefaultSnapshotPath is where the agent keeps its lease snapshot (an emptyDir).
const DefaultSnapshotPath = "/var/lib/vm-dhcp/snapshot.json"

// Params are the facts about a pool the config needs.
type Params struct {
	// Interface the agent listens on, without the leading "%".
	Interface string
	// ServerIP is the pool's spec.ipv4Config.serverIP.
	ServerIP string
	// PoolNamespace and PoolName name the IPPool the plugins serve.
	PoolNamespace string
	PoolName      string
	// SnapshotPath is where ippool-lease keeps its snapshot.
	SnapshotPath string
	// Kubeconfig, when set, is passed to the plugins (outside a cluster only).
	Kubeconfig string
	// ServerDUID, when set, adds a server6 section (DHCPv6 for the pool's
	// spec.ipv6Config) whose server identifier is DUID-LL of this MAC.
	// ServerIP may then be empty: an IPv6-only pool has no server4.
	ServerDUID string
}

// The plugin arguments are split on white space by CoreDHCP, so every value
// must be a single token: the template does no quoting and relies on this.
var token = regexp.MustCompile(`^[A-Za-z0-9._/:@+=-]+$`)

var configTemplate = template.Must(template.New("config.yaml").Parse(`{{ if .ServerIP }}server4:
  listen:
    - "%{{ .Interface }}"
  plugins:
    - server_id: {{ .ServerIP }}
    - harvester-options: {{ .PoolNamespace }}/{{ .PoolName }}{{ with .Kubeconfig }} kubeconfig={{ . }}{{ end }}
    - ippool-lease: {{ .PoolNamespace }}/{{ .PoolName }} snapshot={{ .SnapshotPath }}{{ with .Kubeconfig }} kubeconfig={{ . }}{{ end }}
{{ end }}{{ if .ServerDUID }}server6:
  listen:
    - "[ff02::1:2%{{ .Interface }}]:547"
  plugins:
    - server_id: LL {{ .ServerDUID }}
    - harvester-options: {{ .PoolNamespace }}/{{ .PoolName }}{{ with .Kubeconfig }} kubeconfig={{ . }}{{ end }}
    - ippool-lease: {{ .PoolNamespace }}/{{ .PoolName }} snapshot={{ .SnapshotPath }}{{ with .Kubeconfig }} kubeconfig={{ . }}{{ end }}
    - router-advertisement: {{ .PoolNamespace }}/{{ .PoolName }} interface={{ .Interface }}{{ with .Kubeconfig }} kubeconfig={{ . }}{{ end }}
{{ end }}`))

// Render returns the CoreDHCP config file for p. Empty Interface and
// SnapshotPath take their defaults.
func Render(p Params) (string, error) {
	if p.Interface == "" {
		p.Interface = DefaultInterface
	}
	if p.SnapshotPath == "" {
		p.SnapshotPath = DefaultSnapshotPath
	}
	if p.ServerDUID != "" {
		if hw, err := net.ParseMAC(p.ServerDUID); err != nil || len(hw) != 6 || hw.String() != p.ServerDUID {
			return "", fmt.Errorf("render agent config for %s/%s: server DUID %q is not a lower-case MAC", p.PoolNamespace, p.PoolName, p.ServerDUID)
		}
	}
	if a, err := netip.ParseAddr(p.ServerIP); (err != nil || !a.Is4()) && (p.ServerIP != "" || p.ServerDUID == "") {
		return "", fmt.Errorf("render agent config for %s/%s: server IP %q is not an IPv4 address", p.PoolNamespace, p.PoolName, p.ServerIP)
	}
	for _, f := range []struct{ name, value string }{
		{"interface", p.Interface}, {"pool namespace", p.PoolNamespace}, {"pool name", p.PoolName},
		{"snapshot path", p.SnapshotPath},
	} {
		if !token.MatchString(f.value) {
			return "", fmt.Errorf("render agent config for %s/%s: %s %q is empty or contains characters CoreDHCP would split on", p.PoolNamespace, p.PoolName, f.name, f.value)
		}
	}
	if p.Kubeconfig != "" && !token.MatchString(p.Kubeconfig) {
		return "", fmt.Errorf("render agent config for %s/%s: kubeconfig path %q contains characters CoreDHCP would split on", p.PoolNamespace, p.PoolName, p.Kubeconfig)
	}
	var b bytes.Buffer
	if err := configTemplate.Execute(&b, p); err != nil {
		return "", fmt.Errorf("render agent config for %s/%s: %w", p.PoolNamespace, p.PoolName, err)
	}
	return b.String(), nil
}

// Hash is the hash of a config file's content, as stored in annotations to
// tell generated from user-edited content and to roll the agent on change.
func Hash(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])[:16]
}

// Command vmdhcp-multus stands in for Multus on the test node (Multus cannot
// be obtained here). It is the smallest thing doing Multus's job for our
// pods, as a chained CNI plugin after the node's primary network:
//
//   - ADD: read the pod's k8s.v1.cni.cncf.io/networks annotation through the
//     API, fetch each NetworkAttachmentDefinition, run the plugin its config
//     names (the real bridge plugin) for the extra interface, write the
//     k8s.v1.cni.cncf.io/network-status annotation, and pass the primary
//     network's result on unchanged;
//   - DEL: undo each delegated ADD, from a cache written at ADD time (the pod
//     may be gone by then);
//   - CHECK and VERSION: the minimum the runtime expects.
//
// Its network config is {"type": "vmdhcp-multus", "kubeconfig": PATH,
// "cacheDir": DIR}. Only the annotation forms the controller writes (JSON
// list and "ns/name@ifname") are understood; device plugins, default-network
// overrides and the rest of Multus are not.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

type netConf struct {
	CNIVersion string          `json:"cniVersion"`
	Name       string          `json:"name"`
	Kubeconfig string          `json:"kubeconfig"`
	CacheDir   string          `json:"cacheDir"`
	PrevResult json.RawMessage `json:"prevResult"`
}

// delegation is one extra interface, as cached for DEL.
type delegation struct {
	Network string          `json:"network"` // ns/name of the NAD
	IfName  string          `json:"ifName"`
	Type    string          `json:"type"`
	Config  json.RawMessage `json:"config"`
}

func main() {
	if err := run(); err != nil {
		// The CNI error format: the runtime shows msg in the pod's events.
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"cniVersion": "1.0.0", "code": 999, "msg": err.Error()})
		os.Exit(1)
	}
}

func run() error {
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		fmt.Print(`{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}`)
		return nil
	}
	stdin, err := readAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("read network config: %w", err)
	}
	var conf netConf
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return fmt.Errorf("parse network config: %w", err)
	}
	if conf.CacheDir == "" {
		conf.CacheDir = "/var/lib/cni/vmdhcp-multus"
	}
	cache := filepath.Join(conf.CacheDir, os.Getenv("CNI_CONTAINERID")+"-"+os.Getenv("CNI_IFNAME")+".json")
	switch cmd {
	case "ADD":
		return add(conf, cache)
	case "DEL":
		return del(cache)
	case "CHECK":
		return nil
	}
	return fmt.Errorf("unknown CNI_COMMAND %q", cmd)
}

func add(conf netConf, cache string) error {
	args := cniArgs(os.Getenv("CNI_ARGS"))
	ns, name := args["K8S_POD_NAMESPACE"], args["K8S_POD_NAME"]
	if ns == "" || name == "" {
		return fmt.Errorf("CNI_ARGS has no K8S_POD_NAMESPACE/K8S_POD_NAME: %q", os.Getenv("CNI_ARGS"))
	}
	cs, err := clientFor(conf.Kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	primary, err := primaryStatus(conf)
	if err != nil {
		return err
	}
	statuses := []nadv1.NetworkStatus{primary}
	selections, err := parseSelections(pod.Annotations[nadv1.NetworkAttachmentAnnot], ns)
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	var done []delegation
	for i, sel := range selections {
		ifName := sel.InterfaceRequest
		if ifName == "" {
			ifName = fmt.Sprintf("net%d", i+1)
		}
		d, status, err := delegateAdd(ctx, cs, sel, ifName)
		if err != nil {
			for _, prev := range done {
				_ = delegateDel(prev)
			}
			return err
		}
		done = append(done, d)
		statuses = append(statuses, status)
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o700); err != nil {
		return fmt.Errorf("cache folder: %w", err)
	}
	b, _ := json.Marshal(done)
	if err := os.WriteFile(cache, b, 0o600); err != nil {
		return fmt.Errorf("write cache: %w", err)
	}
	st, _ := json.Marshal(statuses)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{nadv1.NetworkStatusAnnot: string(st)}}})
	if _, err := cs.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("write network-status of %s/%s: %w", ns, name, err)
	}
	// A chained plugin passes the previous result on.
	if len(conf.PrevResult) == 0 {
		return fmt.Errorf("no prevResult: vmdhcp-multus must follow the primary network's plugin in the chain")
	}
	var prev map[string]any
	if err := json.Unmarshal(conf.PrevResult, &prev); err != nil {
		return fmt.Errorf("parse prevResult: %w", err)
	}
	prev["cniVersion"] = conf.CNIVersion
	return json.NewEncoder(os.Stdout).Encode(prev)
}

func del(cache string) error {
	b, err := os.ReadFile(cache)
	if os.IsNotExist(err) {
		return nil // never added, or already deleted
	}
	if err != nil {
		return fmt.Errorf("read cache: %w", err)
	}
	var ds []delegation
	if err := json.Unmarshal(b, &ds); err != nil {
		return fmt.Errorf("parse cache %s: %w", cache, err)
	}
	for _, d := range ds {
		if err := delegateDel(d); err != nil {
			return err
		}
	}
	return os.Remove(cache)
}

func clientFor(kubeconfig string) (*kubernetes.Clientset, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		return nil, fmt.Errorf("network config has no kubeconfig")
	}
	cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return kubernetes.NewForConfig(cfg)
}

// parseSelections reads the networks annotation: a JSON list of
// NetworkSelectionElement, or comma-separated "[ns/]name[@ifname]".
func parseSelections(annot, podNamespace string) ([]nadv1.NetworkSelectionElement, error) {
	annot = strings.TrimSpace(annot)
	if annot == "" {
		return nil, nil
	}
	var sels []nadv1.NetworkSelectionElement
	if strings.HasPrefix(annot, "[") {
		if err := json.Unmarshal([]byte(annot), &sels); err != nil {
			return nil, fmt.Errorf("parse %s annotation: %w", nadv1.NetworkAttachmentAnnot, err)
		}
	} else {
		for _, item := range strings.Split(annot, ",") {
			item = strings.TrimSpace(item)
			var s nadv1.NetworkSelectionElement
			item, s.InterfaceRequest, _ = strings.Cut(item, "@")
			if n, name, ok := strings.Cut(item, "/"); ok {
				s.Namespace, s.Name = n, name
			} else {
				s.Name = item
			}
			sels = append(sels, s)
		}
	}
	for i := range sels {
		if sels[i].Namespace == "" {
			sels[i].Namespace = podNamespace
		}
		if sels[i].Name == "" {
			return nil, fmt.Errorf("%s annotation: element %d has no name", nadv1.NetworkAttachmentAnnot, i)
		}
	}
	return sels, nil
}

func delegateAdd(ctx context.Context, cs *kubernetes.Clientset, sel nadv1.NetworkSelectionElement, ifName string) (delegation, nadv1.NetworkStatus, error) {
	network := sel.Namespace + "/" + sel.Name
	var nad nadv1.NetworkAttachmentDefinition
	err := cs.RESTClient().Get().AbsPath("/apis/k8s.cni.cncf.io/v1/namespaces", sel.Namespace, "network-attachment-definitions", sel.Name).Do(ctx).Into(&nad)
	if err != nil {
		return delegation{}, nadv1.NetworkStatus{}, fmt.Errorf("get NetworkAttachmentDefinition %s: %w", network, err)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(nad.Spec.Config), &cfg); err != nil {
		return delegation{}, nadv1.NetworkStatus{}, fmt.Errorf("NetworkAttachmentDefinition %s: parse spec.config: %w", network, err)
	}
	typ, _ := cfg["type"].(string)
	if typ == "" {
		return delegation{}, nadv1.NetworkStatus{}, fmt.Errorf("NetworkAttachmentDefinition %s: spec.config has no type (plugin lists are not supported)", network)
	}
	if _, ok := cfg["name"]; !ok {
		cfg["name"] = sel.Name
	}
	if _, ok := cfg["cniVersion"]; !ok {
		cfg["cniVersion"] = "0.3.1"
	}
	raw, _ := json.Marshal(cfg)
	d := delegation{Network: network, IfName: ifName, Type: typ, Config: raw}
	out, err := execPlugin("ADD", d)
	if err != nil {
		return delegation{}, nadv1.NetworkStatus{}, fmt.Errorf("network %s on %s: %w", network, ifName, err)
	}
	status := nadv1.NetworkStatus{Name: network, Interface: ifName}
	var res struct {
		Interfaces []struct {
			Name    string `json:"name"`
			Mac     string `json:"mac"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return delegation{}, nadv1.NetworkStatus{}, fmt.Errorf("network %s: parse %s result: %w", network, typ, err)
	}
	for _, i := range res.Interfaces {
		if i.Sandbox != "" && i.Name == ifName {
			status.Mac = i.Mac
		}
	}
	for _, ip := range res.IPs {
		status.IPs = append(status.IPs, strings.Split(ip.Address, "/")[0])
	}
	return d, status, nil
}

func delegateDel(d delegation) error {
	if _, err := execPlugin("DEL", d); err != nil {
		return fmt.Errorf("remove network %s from %s: %w", d.Network, d.IfName, err)
	}
	return nil
}

// execPlugin runs the delegate plugin the way a runtime does: same
// environment but its own interface name, its config on stdin.
func execPlugin(command string, d delegation) ([]byte, error) {
	var bin string
	for _, dir := range filepath.SplitList(os.Getenv("CNI_PATH")) {
		if p := filepath.Join(dir, d.Type); fileExists(p) {
			bin = p
			break
		}
	}
	if bin == "" {
		return nil, fmt.Errorf("plugin %q not found in CNI_PATH %q", d.Type, os.Getenv("CNI_PATH"))
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_IFNAME="+d.IfName)
	cmd.Stdin = bytes.NewReader(d.Config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s%s", d.Type, command, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// primaryStatus is the network-status entry of the primary interface, from
// the previous plugin's result.
func primaryStatus(conf netConf) (nadv1.NetworkStatus, error) {
	st := nadv1.NetworkStatus{Name: conf.Name, Interface: os.Getenv("CNI_IFNAME"), Default: true}
	var res struct {
		Interfaces []struct {
			Name    string `json:"name"`
			Mac     string `json:"mac"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if len(conf.PrevResult) > 0 {
		if err := json.Unmarshal(conf.PrevResult, &res); err != nil {
			return st, fmt.Errorf("parse prevResult: %w", err)
		}
	}
	for _, i := range res.Interfaces {
		if i.Sandbox != "" && i.Name == st.Interface {
			st.Mac = i.Mac
		}
	}
	for _, ip := range res.IPs {
		st.IPs = append(st.IPs, strings.Split(ip.Address, "/")[0])
	}
	return st, nil
}

func cniArgs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func readAll(f *os.File) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(f)
	return b.Bytes(), err
}

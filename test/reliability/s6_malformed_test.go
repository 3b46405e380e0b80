package reliability

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/webhook"
)

// gen builds random IPPools and VMNetCfgs: mostly plausible values with a
// share of edge cases and garbage, so that every branch of validation runs.
type gen struct {
	r *rand.Rand
	// tame makes most values well-formed, so that objects get past the
	// CRD schema and reach the webhook's own checks.
	tame bool
}

// wild is true for the share of values that should be edge cases or garbage.
func (g gen) wild() bool { return !g.tame || g.r.Intn(5) == 0 }

func (g gen) pick(vals ...string) string { return vals[g.r.Intn(len(vals))] }

func (g gen) garbage() string {
	n := g.r.Intn(40)
	if g.r.Intn(50) == 0 {
		n = 5000 + g.r.Intn(5000)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.Intn(256))
	}
	return strings.ToValidUTF8(string(b), "?")
}

func (g gen) ip() string {
	if !g.wild() {
		return fmt.Sprintf("192.168.100.%d", g.r.Intn(256))
	}
	switch g.r.Intn(4) {
	case 0:
		return fmt.Sprintf("192.168.100.%d", g.r.Intn(256))
	case 1:
		return fmt.Sprintf("%d.%d.%d.%d", g.r.Intn(300), g.r.Intn(256), g.r.Intn(256), g.r.Intn(256))
	case 2:
		return g.pick("", "0.0.0.0", "255.255.255.255", "192.168.100.1", "192.168.100.2", "192.168.100.255",
			"10.43.0.1", "::1", "fe80::1", "::ffff:192.168.100.3", "1.2.3", "01.02.03.04", " 192.168.100.9",
			"192.168.100.9/24", "192.168.100.9\x00", "١٩٢.١٦٨.١٠٠.٣", "224.0.0.1", "127.0.0.1")
	default:
		return g.garbage()
	}
}

func (g gen) cidr() string {
	if !g.wild() {
		return "192.168.100.0/24"
	}
	switch g.r.Intn(3) {
	case 0:
		return g.pick("192.168.100.0/24", "192.168.100.0/24", "10.0.0.0/8", "172.16.0.0/12", "192.168.100.5/24",
			"0.0.0.0/0", "10.0.0.0/30", "10.0.0.0/31", "10.0.0.0/32", "10.0.0.0/33", "10.43.0.0/16", "10.42.1.0/24",
			"::/0", "2001:db8::/64", "", "/24", "192.168.100.0/", "224.0.0.0/4")
	case 1:
		return fmt.Sprintf("%d.%d.%d.%d/%d", g.r.Intn(256), g.r.Intn(256), g.r.Intn(256), g.r.Intn(256), g.r.Intn(40))
	default:
		return g.garbage()
	}
}

func (g gen) network() string {
	if !g.wild() {
		return g.pick("default/net", "ns1/net")
	}
	return g.pick("default/net", "default/net", "ns1/net", "default/missing", "net", "", "/", "a/b/c", "default/",
		"/net", "Default/Net", strings.Repeat("n", 300)+"/net", g.garbage())
}

func (g gen) mac() string {
	if !g.wild() {
		return fmt.Sprintf("02:00:00:%02x:%02x:%02x", g.r.Intn(256), g.r.Intn(256), g.r.Intn(256))
	}
	switch g.r.Intn(3) {
	case 0:
		return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", g.r.Intn(256), g.r.Intn(256), g.r.Intn(256), g.r.Intn(256), g.r.Intn(256), g.r.Intn(256))
	case 1:
		return g.pick("02:00:00:00:00:01", "02:00:00:00:00:02", "02:AA:bb:CC:dd:EE", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff",
			"00:00:00:00:00:00", "02-00-00-00-00-03", "0200.0000.0004", "02:00:00:00:00", "02:00:00:00:00:00:00:01", "zz:zz:zz:zz:zz:zz", "")
	default:
		return g.garbage()
	}
}

func (g gen) intPtr() *int {
	if g.r.Intn(3) == 0 {
		return nil
	}
	return ptr.To([]int{-1, 0, 1, 59, 60, 67, 68, 1500, 9000, 65535, 65536, 3600, math.MaxInt32, math.MinInt32, g.r.Int()}[g.r.Intn(15)])
}

func (g gen) ips(max int) []v1alpha1.IPv4Address {
	var out []v1alpha1.IPv4Address
	for range g.r.Intn(max + 1) {
		out = append(out, v1alpha1.IPv4Address(g.ip()))
	}
	return out
}

// addrs is ips as plain strings (spec.ipv4Config.dns is not typed as addresses).
func (g gen) addrs(max int) []string {
	var out []string
	for _, a := range g.ips(max) {
		out = append(out, string(a))
	}
	return out
}

func (g gen) strs(max int) []string {
	var out []string
	for range g.r.Intn(max + 1) {
		out = append(out, g.pick("example.com", "", "a..b", "-x-", strings.Repeat("a", 300), g.garbage()))
	}
	return out
}

func (g gen) ipPool(i int) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.pick("default", "ns1"), Name: fmt.Sprintf("fuzz-%d", i)},
		Spec: v1alpha1.IPPoolSpec{NetworkName: g.network(), IPv4Config: v1alpha1.IPv4Config{
			ServerIP: v1alpha1.IPv4Address(g.ip()), CIDR: g.cidr(), Router: v1alpha1.IPv4Address(g.ip()),
			Pool: v1alpha1.Pool{Start: v1alpha1.IPv4Address(g.ip()), End: v1alpha1.IPv4Address(g.ip()), Exclude: g.ips(4)},
			DNS:  g.addrs(3), LeaseTime: g.intPtr(), MTU: g.intPtr(), DomainSearch: g.strs(3), NTP: g.strs(2),
		}},
	}
	if g.r.Intn(2) == 0 {
		p.Spec.IPv4Config.DomainName = ptr.To(g.pick("example.com", "", "bad domain", g.garbage()))
	}
	for range g.r.Intn(3) {
		p.Spec.IPv4Config.Routes = append(p.Spec.IPv4Config.Routes, v1alpha1.Route{Destination: g.cidr(), Gateway: v1alpha1.IPv4Address(g.ip())})
	}
	if g.r.Intn(4) == 0 {
		p.Spec.Paused = ptr.To(g.r.Intn(2) == 0)
	}
	if g.r.Intn(3) == 0 {
		p.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{g.ip(): g.mac(), g.ip(): g.mac()}, Used: g.r.Intn(10) - 2}
	}
	return p
}

func (g gen) vmNetCfg(i int) *v1alpha1.VirtualMachineNetworkConfig {
	v := &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.pick("default", "ns1"), Name: fmt.Sprintf("fuzz-%d", i)},
		Spec:       v1alpha1.VirtualMachineNetworkConfigSpec{VMName: g.pick(fmt.Sprintf("vm-%d", i), "", g.garbage())},
	}
	for range g.r.Intn(4) {
		nc := v1alpha1.NetworkConfig{NetworkName: g.network(), MACAddress: g.mac()}
		if g.r.Intn(2) == 0 {
			nc.IPAddress = ptr.To(v1alpha1.IPv4Address(g.ip()))
		}
		v.Spec.NetworkConfigs = append(v.Spec.NetworkConfigs, nc)
	}
	if g.r.Intn(4) == 0 {
		v.Spec.Paused = ptr.To(true)
	}
	return v
}

// lookupFixture is what the in-process validation sees of a cluster.
func lookupFixture() webhook.Objects {
	good := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "net"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/net", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.100.2", CIDR: "192.168.100.0/24", Router: "192.168.100.1",
			Pool: v1alpha1.Pool{Start: "192.168.100.10", End: "192.168.100.250"}}},
		Status: v1alpha1.IPPoolStatus{IPv4: &v1alpha1.IPv4Status{Allocated: map[string]string{"192.168.100.10": "02:00:00:00:00:01"}, Used: 1, Available: 240}}}
	return webhook.Objects{
		NADs:      []string{"default/net", "ns1/net"},
		IPPools:   []v1alpha1.IPPool{*good},
		VMNetCfgs: []v1alpha1.VirtualMachineNetworkConfig{*vmNetCfg("default", "taken", "default/net", "02:00:00:00:00:01")},
	}
}

// checkRefusal fails on a refusal without a message.
func checkRefusal(es webhook.FieldErrors) error {
	for _, e := range es {
		if strings.TrimSpace(e.Field) == "" || strings.TrimSpace(e.Reason) == "" || strings.TrimSpace(e.Error()) == "" {
			return fmt.Errorf("refusal without a message: %#v", e)
		}
	}
	if len(es) > 0 && strings.TrimSpace(es.Error()) == "" {
		return errors.New("refusal list with an empty message")
	}
	return nil
}

// S6, webhook half: 10,000 random objects through the exported validation
// functions (no server), then a sample through the real API server calling
// the real vm-dhcp-webhook binary.
func TestS6MalformedObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("fault scenario")
	}
	const n, sample = 10000, 400
	r := newResult("s6a", "malformed input: 10,000 random IPPools/VMNetCfgs through the webhook's validation, a sample through the API server")
	report(t, r)
	seed := time.Now().UnixNano()
	r.Add("random seed", seed)
	g := gen{r: rand.New(rand.NewSource(seed))}
	lk := lookupFixture()
	opts := webhook.Options{ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16"), PodCIDR: netip.MustParsePrefix("10.42.0.0/16")}
	ctx := context.Background()
	var calls, refused, accepted, panics, empty int
	call := func(what string, fn func() (webhook.FieldErrors, error)) {
		calls++
		defer func() {
			if p := recover(); p != nil {
				panics++
				t.Errorf("%s panicked: %v", what, p)
			}
		}()
		es, err := fn()
		if err != nil {
			t.Errorf("%s: lookup error from an in-memory lookup: %v", what, err)
			return
		}
		if err := checkRefusal(es); err != nil {
			empty++
			t.Errorf("%s: %v", what, err)
		}
		if len(es) > 0 {
			refused++
		} else {
			accepted++
		}
	}
	start := time.Now()
	for i := range n / 2 {
		p, old := g.ipPool(i), g.ipPool(i)
		op := []admissionv1.Operation{admissionv1.Create, admissionv1.Update, admissionv1.Delete, admissionv1.Connect}[g.r.Intn(4)]
		call("ValidateIPPool "+string(op), func() (webhook.FieldErrors, error) {
			return webhook.ValidateIPPool(ctx, lk, opts, op, p, old)
		})
		call("DefaultIPPool", func() (webhook.FieldErrors, error) {
			webhook.DefaultIPPool(p.DeepCopy())
			return nil, nil
		})
		v, vold := g.vmNetCfg(i), g.vmNetCfg(i)
		if g.r.Intn(2) == 0 {
			vold = nil
		}
		vop := []admissionv1.Operation{admissionv1.Create, admissionv1.Update, admissionv1.Delete}[g.r.Intn(3)]
		call("ValidateVMNetCfg "+string(vop), func() (webhook.FieldErrors, error) {
			return webhook.ValidateVMNetCfg(ctx, lk, vop, v, vold)
		})
	}
	call("ValidateIPPool nil", func() (webhook.FieldErrors, error) {
		return webhook.ValidateIPPool(ctx, lk, opts, admissionv1.Create, nil, nil)
	})
	call("ValidateVMNetCfg nil", func() (webhook.FieldErrors, error) {
		return webhook.ValidateVMNetCfg(ctx, lk, admissionv1.Create, nil, nil)
	})
	inProcess := time.Since(start)
	r.Add("random objects (IPPools + VMNetCfgs)", fmt.Sprintf("%d + %d", n/2, n/2))
	r.Add("in-process calls (validate IPPool, default IPPool, validate VMNetCfg)", fmt.Sprintf("%d in %s", calls, inProcess.Round(time.Millisecond)))
	r.Add("in-process refused / accepted (DefaultIPPool counts as accepted)", fmt.Sprintf("%d / %d", refused, accepted))
	r.Add("panics", panics)
	r.Add("refusals without a message", empty)
	if refused == 0 || accepted == 0 {
		t.Errorf("the generator is one-sided: %d refused, %d accepted", refused, accepted)
	}

	// Through the real API server and the real webhook binary.
	mut, val := webhook.Configurations("vm-dhcp-webhook", agentNamespace, "vm-dhcp-webhook", nil)
	cp := startControlPlane(t, &envtest.WebhookInstallOptions{
		MutatingWebhooks: []*admissionregv1.MutatingWebhookConfiguration{mut}, ValidatingWebhooks: []*admissionregv1.ValidatingWebhookConfiguration{val}})
	wio := &cp.env.WebhookInstallOptions
	logPath := t.TempDir() + "/webhook.log"
	wh := startProcess(t, "webhook", logPath, webhookBinary(t),
		"--kubeconfig", cp.kubeconfig, "--namespace", agentNamespace, "--cert-mode", "external", "--cert-dir", wio.LocalServingCertDir,
		"--port", strconv.Itoa(wio.LocalServingPort), "--service-cidr", "10.43.0.0/16", "--pod-cidr", "10.42.0.0/16",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "127.0.0.1:0", "--zap-log-level", "error")
	t.Cleanup(func() { wh.stop(5 * time.Second) })
	for _, o := range []client.Object{vmNetCfgNamespace("ns1")} {
		if err := cp.client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"default", "ns1"} {
		nad := lookupNAD(ns)
		if err := cp.client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
	}
	// The webhook answers once a probe object is judged by it: a pool
	// without a network name is refused by our validation, not the schema.
	if err := eventually(ctx, 60*time.Second, 250*time.Millisecond, func() error {
		if ok, err := wh.exited(); ok {
			return fmt.Errorf("webhook exited: %v\n%s", err, tail(logPath, 2000))
		}
		probe := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "probe"},
			Spec: v1alpha1.IPPoolSpec{NetworkName: "default/missing", IPv4Config: v1alpha1.IPv4Config{
				ServerIP: "192.168.100.2", CIDR: "192.168.100.0/24", Pool: v1alpha1.Pool{Start: "192.168.100.10", End: "192.168.100.20"}}}}
		err := cp.client.Create(ctx, probe, client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "denied the request") {
			return nil
		}
		return fmt.Errorf("webhook not judging yet: %v", err)
	}); err != nil {
		t.Fatal(err)
	}
	var apiAccepted, apiByWebhook, apiBySchema, apiOther int
	g.tame = true
	sampleStart := time.Now()
	for i := range sample {
		var obj client.Object
		if i%2 == 0 {
			p := g.ipPool(n + i)
			p.Status = v1alpha1.IPPoolStatus{}
			obj = p
		} else {
			obj = g.vmNetCfg(n + i)
		}
		err := cp.client.Create(ctx, obj)
		switch {
		case err == nil:
			apiAccepted++
		case strings.TrimSpace(err.Error()) == "":
			t.Errorf("refusal without a message for %T %s", obj, obj.GetName())
		case strings.Contains(err.Error(), "denied the request"):
			apiByWebhook++
			if msg := err.Error()[strings.Index(err.Error(), "denied the request")+len("denied the request"):]; len(strings.Trim(msg, ": ")) == 0 {
				t.Errorf("webhook refusal without a message: %v", err)
			}
		case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
			apiBySchema++
		default:
			apiOther++
			t.Errorf("unexpected error for %T %s: %v", obj, obj.GetName(), err)
		}
	}
	sampleTook := time.Since(sampleStart)
	if ok, err := wh.exited(); ok {
		t.Errorf("webhook exited: %v", err)
	}
	logText, _ := os.ReadFile(logPath)
	panicked := regexp.MustCompile(`(?i)panic`).FindAllIndex(logText, -1)
	r.Add("through the API server + vm-dhcp-webhook binary", fmt.Sprintf("%d creates of mostly well-formed random objects in %s", sample, sampleTook.Round(time.Millisecond)))
	r.Add("API server: accepted / refused by the webhook / refused by the CRD schema / other", fmt.Sprintf("%d / %d / %d / %d", apiAccepted, apiByWebhook, apiBySchema, apiOther))
	r.Add("\"panic\" in the webhook's log", len(panicked))
	if len(panicked) > 0 {
		t.Errorf("the webhook logged a panic:\n%s", tail(logPath, 3000))
	}
	if apiByWebhook == 0 {
		t.Errorf("no object of the sample reached the webhook's refusal")
	}
}

func vmNetCfgNamespace(name string) client.Object { return namespaceObj(name) }

// S6, agent half (1): the plugins' fuzz tests on their seed corpus, then a
// short real fuzzing run of the DHCP handlers.
func TestS6AgentFuzzCorpus(t *testing.T) {
	if testing.Short() {
		t.Skip("fault scenario")
	}
	// An execution count, not a duration: Go 1.26's fuzz coordinator can
	// fail a duration-bounded run with a spurious "context deadline
	// exceeded" when the machine is loaded (golang/go#75804).
	const fuzzTime = "150000x"
	r := newResult("s6b", "malformed input: the agent's fuzz corpus and a short fuzzing run of its DHCP handlers")
	report(t, r)
	run := func(args ...string) string {
		cmd := exec.Command("go", append([]string{"test", "-count=1"}, args...)...)
		cmd.Dir = testenv.RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go test %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	start := time.Now()
	seeds := run("-run", "^Fuzz", "-v", "./plugins/...")
	passed := regexp.MustCompile(`(?m)^--- PASS: (Fuzz\w+)`).FindAllStringSubmatch(seeds, -1)
	seedInputs := len(regexp.MustCompile(`(?m)^\s+--- PASS: Fuzz\w+/`).FindAllString(seeds, -1))
	var names []string
	for _, m := range passed {
		names = append(names, m[1])
	}
	seedsTook := time.Since(start)
	start = time.Now()
	fuzz := run("-run", "^$", "-fuzz", "^FuzzHandlers$", "-fuzztime", fuzzTime, "./plugins/ippoollease/")
	execs := "?"
	if m := regexp.MustCompile(`execs: (\d+)`).FindAllStringSubmatch(fuzz, -1); len(m) > 0 {
		execs = m[len(m)-1][1]
	}
	r.Add("fuzz tests run on their seed corpus (go test -run ^Fuzz ./plugins/...)", fmt.Sprintf("%s: %d seed inputs (%s with compiling)", strings.Join(names, ", "), seedInputs, seedsTook.Round(time.Millisecond)))
	r.Add("fuzzing FuzzHandlers (CoreDHCP parse + harvester-options + ippool-lease)", fmt.Sprintf("budget %s, %s executions", fuzzTime, execs))
	r.Add("failures / panics", 0)
	if len(names) == 0 {
		t.Errorf("no fuzz test ran:\n%s", seeds)
	}
}

// S6, agent half (2): garbage on the wire to the running agent.
func s6WireGarbage(t *testing.T, e *agentEnv) {
	const n = 20000
	r := newResult("s6c", "malformed input: 20,000 garbage and mutated DHCP datagrams to the running agent")
	report(t, r)
	agent := e.currentAgent()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	var conn net.PacketConn
	if err := inNetns(e.floodNS, func() error {
		var err error
		conn, err = net.ListenPacket("udp4", floodIP+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := &net.UDPAddr{IP: net.ParseIP(serverIP), Port: 67}
	valid := func() []byte {
		mac := net.HardwareAddr{2, byte(rng.Intn(256)), byte(rng.Intn(256)), byte(rng.Intn(256)), byte(rng.Intn(256)), byte(rng.Intn(256))}
		if rng.Intn(4) == 0 {
			mac, _ = net.ParseMAC(e.probers[0].mac) // a known client's MAC, so the answering path runs too
		}
		m, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithMessageType([]dhcpv4.MessageType{dhcpv4.MessageTypeDiscover,
			dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline, 0, 200}[rng.Intn(7)]))
		return m.ToBytes()
	}
	kinds := [3]int{}
	start := time.Now()
	for i := range n {
		var b []byte
		switch k := i % 3; k {
		case 0: // random bytes
			b = make([]byte, rng.Intn(700))
			rng.Read(b)
			kinds[k]++
		case 1: // valid packet with bytes flipped (options mangled)
			b = valid()
			for range 1 + rng.Intn(8) {
				b[rng.Intn(len(b))] = byte(rng.Intn(256))
			}
			kinds[k]++
		default: // truncated or padded
			b = valid()
			if rng.Intn(2) == 0 {
				b = b[:rng.Intn(len(b))]
			} else {
				b = append(b, make([]byte, rng.Intn(1000))...)
			}
			kinds[k]++
		}
		if _, err := conn.WriteTo(b, dst); err != nil {
			t.Fatalf("send: %v", err)
		}
		if i%500 == 0 {
			time.Sleep(5 * time.Millisecond) // let the agent read rather than the socket buffer drop
		}
	}
	took := time.Since(start)
	time.Sleep(time.Second)
	exited, exitErr := agent.exited()
	d, renewErr := e.probers[0].renew(context.Background())
	logText, _ := os.ReadFile(e.agentLog())
	panics := len(regexp.MustCompile(`(?i)panic`).FindAllIndex(logText, -1))
	r.Add("random seed", seed)
	r.Add("datagrams sent (random / mutated DHCP / truncated or padded)", fmt.Sprintf("%d (%d / %d / %d) in %s", n, kinds[0], kinds[1], kinds[2], took.Round(time.Millisecond)))
	r.Add("agent still running (same process)", !exited)
	r.Add("\"panic\" in the agent's log", panics)
	r.Add("known client renewal right after", fmt.Sprintf("ok=%t in %s", renewErr == nil, d.Round(10*time.Microsecond)))
	if exited {
		t.Errorf("agent exited: %v\n%s", exitErr, tail(e.agentLog(), 3000))
	}
	if panics > 0 {
		t.Errorf("agent logged a panic:\n%s", tail(e.agentLog(), 3000))
	}
	if renewErr != nil {
		t.Errorf("known client not answered after the garbage: %v", renewErr)
	}
}

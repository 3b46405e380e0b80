package poolwatch

import (
	"strconv"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics (names fixed by
// docs/interfaces.md). The counters are safe for concurrent use; the
// per-type counters are resolved once so the packet path does no label
// lookups.
type Metrics struct {
	requests *prometheus.CounterVec
	replies  *prometheus.CounterVec
	// byType* hold the resolved counter of each known type; read-only
	// after newMetrics.
	byTypeRequests, byTypeReplies map[dhcpv4.MessageType]prometheus.Counter
	NAKs                          prometheus.Counter
	UnknownMAC                    prometheus.Counter
	// Declines counts DHCPDECLINEs seen (CoreDHCP drops them before any
	// plugin; the agent observes them beside it).
	Declines       prometheus.Counter
	optionsDropped *prometheus.CounterVec
	HandleSeconds  prometheus.Histogram
}

// messageTypes are the DHCPv4 message types counted under their own label;
// anything else is counted as "other".
var messageTypes = []dhcpv4.MessageType{
	dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeRequest,
	dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak,
	dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform,
}

func newMetrics() *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmdhcp_agent_requests_total", Help: "DHCPv4 requests received, by message type.",
		}, []string{"type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmdhcp_agent_replies_total", Help: "DHCPv4 replies sent, by message type.",
		}, []string{"type"}),
		NAKs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vmdhcp_agent_naks_total", Help: "DHCPNAKs sent to clients asking for an address that is not theirs.",
		}),
		UnknownMAC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vmdhcp_agent_unknown_mac_total", Help: "Requests from hardware addresses with no allocation (not answered).",
		}),
		Declines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vmdhcp_agent_declines_total", Help: "DHCPv4 DHCPDECLINEs and DHCPv6 DECLINEs received: a client found its address in use by another host.",
		}),
		optionsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmdhcp_agent_reply_options_dropped_total",
			Help: "Options left out of replies so that they fit the client's maximum message size, by option code.",
		}, []string{"option"}),
		HandleSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vmdhcp_agent_handle_seconds",
			Help:    "Time the ippool-lease plugin spends deciding a reply.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10), // 1µs .. ~0.26s
		}),
		byTypeRequests: map[dhcpv4.MessageType]prometheus.Counter{},
		byTypeReplies:  map[dhcpv4.MessageType]prometheus.Counter{},
	}
	for _, t := range messageTypes {
		m.byTypeRequests[t] = m.requests.WithLabelValues(t.String())
		m.byTypeReplies[t] = m.replies.WithLabelValues(t.String())
	}
	// Resolving creates every series at 0, which is what Prometheus wants
	// anyway: rate() over a series that appears late misses its first hits.
	return m
}

// Request counts one received message of type t.
func (m *Metrics) Request(t dhcpv4.MessageType) { count(m.requests, m.byTypeRequests, t) }

// OptionDropped counts one option left out of a reply to make it fit.
func (m *Metrics) OptionDropped(code uint8) {
	m.optionsDropped.WithLabelValues(strconv.Itoa(int(code))).Inc()
}

// Reply counts one reply of type t.
func (m *Metrics) Reply(t dhcpv4.MessageType) { count(m.replies, m.byTypeReplies, t) }

func count(vec *prometheus.CounterVec, resolved map[dhcpv4.MessageType]prometheus.Counter, t dhcpv4.MessageType) {
	if c, ok := resolved[t]; ok {
		c.Inc()
		return
	}
	vec.WithLabelValues("other").Inc()
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.replies, m.NAKs, m.UnknownMAC, m.Declines, m.optionsDropped, m.HandleSeconds}
}

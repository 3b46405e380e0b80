package poolwatch

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// TestWatchKeepsTheLastViewThroughErrors: the agent's pool view survives
// everything a failing API server does after a first good list: a watch
// event with status fields this agent does not know (a newer controller),
// an event that does not decode (the watch ends with "unable to decode an
// event"), and then lists and watches that fail. Until a new good view
// arrives, the last one is served, with every allocation in it.
func TestWatchKeepsTheLastViewThroughErrors(t *testing.T) {
	const (
		// Status fields unknown to this agent's types must be ignored.
		pool10 = `{"kind":"IPPool","apiVersion":"network.harvesterhci.io/v1alpha1","metadata":{"namespace":"default","name":"example","resourceVersion":"10"},
			"spec":{"ipv4Config":{"serverIP":"192.168.100.2","cidr":"192.168.100.0/24","pool":{"start":"192.168.100.10","end":"192.168.100.200"}}},
			"status":{"ipv4":{"allocated":{"192.168.100.10":"02:00:00:00:00:10"},"owners":{"192.168.100.10":"uid-a"},"released":{},"futureField":{"x":[1]}}}}`
		pool11 = `{"kind":"IPPool","apiVersion":"network.harvesterhci.io/v1alpha1","metadata":{"namespace":"default","name":"example","resourceVersion":"11"},
			"spec":{"ipv4Config":{"serverIP":"192.168.100.2","cidr":"192.168.100.0/24","pool":{"start":"192.168.100.10","end":"192.168.100.200"}}},
			"status":{"ipv4":{"allocated":{"192.168.100.10":"02:00:00:00:00:10","192.168.100.11":"02:00:00:00:00:11"},"owners":{"192.168.100.11":"uid-b"},"releasedV2":[{"ip":"192.168.100.12"}]}}}`
		// allocated as a number: this event cannot be decoded.
		garbage = `{"kind":"IPPool","apiVersion":"network.harvesterhci.io/v1alpha1","metadata":{"namespace":"default","name":"example","resourceVersion":"12"},"status":{"ipv4":{"allocated":5}}}`
		list    = `{"kind":"IPPoolList","apiVersion":"network.harvesterhci.io/v1alpha1","metadata":{"resourceVersion":"10"},"items":[` + pool10 + `]}`
	)
	var lists, watches atomic.Int32
	watchDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") != "true" {
			if lists.Add(1) > 1 {
				http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd unavailable","reason":"InternalError","code":500}`, http.StatusInternalServerError)
				return
			}
			_, _ = w.Write([]byte(list))
			return
		}
		if r.URL.Query().Get("sendInitialEvents") == "true" {
			// A streaming list (WatchList): refuse it, the reflector
			// falls back to list + watch, which this server scripts.
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no streaming list","reason":"BadRequest","code":400}`, http.StatusBadRequest)
			return
		}
		if watches.Add(1) > 1 {
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd unavailable","reason":"InternalError","code":500}`, http.StatusInternalServerError)
			return
		}
		fl := w.(http.Flusher)
		_, _ = w.Write([]byte(`{"type":"MODIFIED","object":` + pool11 + "}\n"))
		fl.Flush()
		time.Sleep(200 * time.Millisecond)
		_, _ = w.Write([]byte(`{"type":"MODIFIED","object":` + garbage + "}\n"))
		fl.Flush()
		close(watchDone)
	}))
	t.Cleanup(srv.Close)

	logs := &logLines{}
	reg := NewRegistry(logs.logger())
	t.Cleanup(reg.Stop)
	reg.restConfig = func(string) (*rest.Config, error) { return &rest.Config{Host: srv.URL}, nil }
	w, err := reg.Watch("default", "example", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.all())
		}
	})

	eventually(t, 20*time.Second, "the event with unknown status fields was not served", func() bool {
		return w.Current() != nil && leaseOf(w, "02:00:00:00:00:11").String() == "192.168.100.11"
	})
	<-watchDone
	// The watch ended on the undecodable event; the relist and the next
	// watches fail. Wait until the reflector has failed a few times.
	eventually(t, 30*time.Second, "no failed relist", func() bool { return lists.Load() >= 3 })
	p := w.Current()
	if p == nil || p.ResourceVersion != "11" || len(p.Leases) != 2 ||
		leaseOf(w, "02:00:00:00:00:10").String() != "192.168.100.10" || leaseOf(w, "02:00:00:00:00:11").String() != "192.168.100.11" {
		t.Fatalf("after the watch failed the served view is %+v, want resourceVersion 11 with both leases", p)
	}
	if logs.find("cannot", "IPPool") == "" {
		t.Errorf("the failures were not logged")
	}
}

package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// /debug/pprof/ is served only with --pprof; the health endpoints always.
func TestHealthMuxPprofOnlyWhenAsked(t *testing.T) {
	for _, withPprof := range []bool{false, true} {
		srv := httptest.NewServer(healthMux(withPprof))
		status := func(path string) int {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		wantPprof := http.StatusNotFound
		if withPprof {
			wantPprof = http.StatusOK
		}
		if got := status("/debug/pprof/"); got != wantPprof {
			t.Errorf("pprof=%v: /debug/pprof/ status %d, want %d", withPprof, got, wantPprof)
		}
		if got := status("/healthz"); got != http.StatusOK {
			t.Errorf("pprof=%v: /healthz status %d", withPprof, got)
		}
		if got := status("/metrics"); got != http.StatusOK {
			t.Errorf("pprof=%v: /metrics status %d", withPprof, got)
		}
		srv.Close()
	}
}

package controller

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func checkDebugEndpoints(t *testing.T, store *PoolStore, pk types.NamespacedName, want map[string]string) {
	t.Helper()
	h := debugHandlers(store, k8s)
	get := func(path string, into any) int {
		rec := httptest.NewRecorder()
		prefix := "/ipams/"
		if path[:8] == "/caches/" {
			prefix = "/caches/"
		}
		h[prefix].ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		return rec.Code
	}
	var view IPAMView
	if code := get("/ipams/"+pk.String(), &view); code != http.StatusOK {
		t.Fatalf("/ipams: %d", code)
	}
	if view.Used != len(want) {
		t.Errorf("/ipams used %d, want %d", view.Used, len(want))
	}
	for ip, mac := range want {
		if view.Allocated[ip] != mac {
			t.Errorf("/ipams %s -> %q, want %q", ip, view.Allocated[ip], mac)
		}
	}
	var cache map[string]string
	if code := get("/caches/"+pk.String(), &cache); code != http.StatusOK {
		t.Fatalf("/caches: %d", code)
	}
	if len(cache) != len(want) {
		t.Errorf("/caches has %d entries, want %d", len(cache), len(want))
	}
	for ip, mac := range want {
		if cache[mac] != ip {
			t.Errorf("/caches %s -> %q, want %q", mac, cache[mac], ip)
		}
	}
	if code := get("/ipams/nope/nope", &view); code != http.StatusNotFound {
		t.Errorf("/ipams of unknown pool: %d", code)
	}
	rec := httptest.NewRecorder()
	h["/ipams/"].ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ipams/"+pk.String(), nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ipams: %d", rec.Code)
	}
}

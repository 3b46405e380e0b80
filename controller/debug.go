package controller

import (
	"encoding/json"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// IPAMView is what /ipams/<ns>/<name> shows.
type IPAMView struct {
	IPPool    string            `json:"ippool"`
	Used      int               `json:"used"`
	Available int               `json:"available"`
	Allocated map[string]string `json:"allocated"`
}

// debugHandlers serve read-only views of the in-memory state:
// /ipams/<ns>/<name> (address -> MAC or mark) and /caches/<ns>/<name>
// (MAC -> address). <ns>/<name> is the IPPool, or its network.
func debugHandlers(store *PoolStore, c client.Reader) map[string]http.Handler {
	find := func(r *http.Request, prefix string) (types.NamespacedName, bool) {
		ns, name, ok := strings.Cut(strings.Trim(strings.TrimPrefix(r.URL.Path, prefix), "/"), "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return types.NamespacedName{}, false
		}
		key := types.NamespacedName{Namespace: ns, Name: name}
		if _, ok := store.IPAM(key); ok {
			return key, true
		}
		if owner, err := networkOwner(r.Context(), c, ns+"/"+name); err == nil && owner != nil {
			return types.NamespacedName{Namespace: owner.Namespace, Name: owner.Name}, true
		}
		return key, false
	}
	serve := func(prefix string, view func(types.NamespacedName) any) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet {
				http.Error(w, "read-only endpoint: use GET", http.StatusMethodNotAllowed)
				return
			}
			key, ok := find(r, prefix)
			if !ok {
				http.Error(w, "no IPAM loaded for that IPPool or network; use "+prefix+"<namespace>/<name>", http.StatusNotFound)
				return
			}
			v := view(key)
			if v == nil {
				http.Error(w, "no IPAM loaded for "+key.String(), http.StatusNotFound)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(v)
		})
	}
	return map[string]http.Handler{
		"/ipams/": serve("/ipams/", func(key types.NamespacedName) any {
			am, ok := store.IPAM(key)
			if !ok {
				return nil
			}
			return IPAMView{IPPool: key.String(), Used: am.Used(), Available: am.Available(), Allocated: am.Allocated()}
		}),
		"/caches/": serve("/caches/", func(key types.NamespacedName) any {
			am, ok := store.IPAM(key)
			if !ok {
				return nil
			}
			byMAC := map[string]string{}
			for ip, owner := range am.Allocated() {
				if owner != v1alpha1.AllocatedExcluded && owner != v1alpha1.AllocatedReserved {
					byMAC[owner] = ip
				}
			}
			return byMAC
		}),
	}
}

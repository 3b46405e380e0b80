package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Paths the webhook server serves (docs/interfaces.md).
const (
	MutateIPPoolPath     = "/mutate-ippool"
	ValidateIPPoolPath   = "/validate-ippool"
	ValidateVMNetCfgPath = "/validate-vmnetcfg"
)

// Handlers serve the three admission paths.
type Handlers struct {
	Lookup  Lookup
	Options Options
	Decoder admission.Decoder
	Log     logr.Logger
}

// Register adds the three webhooks to srv. controller-runtime instruments
// each path with its admission metrics and recovers panics into errors.
func Register(srv webhook.Server, h Handlers) {
	srv.Register(MutateIPPoolPath, &webhook.Admission{Handler: admission.HandlerFunc(h.mutateIPPool)})
	srv.Register(ValidateIPPoolPath, &webhook.Admission{Handler: admission.HandlerFunc(h.validateIPPool)})
	srv.Register(ValidateVMNetCfgPath, &webhook.Admission{Handler: admission.HandlerFunc(h.validateVMNetCfg)})
}

// mutateIPPool fills missing range and server address on create. The patch
// is computed against the request's own JSON, so fields our Go types do not
// know are left as the user sent them.
func (h Handlers) mutateIPPool(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create {
		return admission.Allowed("defaults are filled on create only")
	}
	var pool v1alpha1.IPPool
	if err := h.Decoder.Decode(req, &pool); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode IPPool: %w", err))
	}
	filled := append(DefaultIPPool(&pool), DefaultIPPoolV6(&pool)...)
	if len(filled) == 0 {
		return admission.Allowed("nothing to fill")
	}
	var raw map[string]any
	if err := json.Unmarshal(req.Object.Raw, &raw); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode IPPool JSON: %w", err))
	}
	c := pool.Spec.IPv4Config
	values := map[string]string{
		ipv4Path + ".pool.start": string(c.Pool.Start),
		ipv4Path + ".pool.end":   string(c.Pool.End),
		ipv4Path + ".serverIP":   string(c.ServerIP),
	}
	keys := map[string][]string{
		ipv4Path + ".pool.start": {"spec", "ipv4Config", "pool", "start"},
		ipv4Path + ".pool.end":   {"spec", "ipv4Config", "pool", "end"},
		ipv4Path + ".serverIP":   {"spec", "ipv4Config", "serverIP"},
	}
	values6, keys6 := defaultPathsV6(&pool)
	maps.Copy(values, values6)
	maps.Copy(keys, keys6)
	for _, f := range filled {
		setNested(raw, values[f], keys[f]...)
	}
	out, err := json.Marshal(raw)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encode IPPool: %w", err))
	}
	h.Log.V(1).Info("filled IPPool defaults", "ippool", req.Namespace+"/"+req.Name, "fields", filled)
	return admission.PatchResponseFromRaw(req.Object.Raw, out)
}

// setNested sets m[k0][k1]...=v, making maps on the way.
func setNested(m map[string]any, v string, keys ...string) {
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

func (h Handlers) validateIPPool(ctx context.Context, req admission.Request) admission.Response {
	var pool, old v1alpha1.IPPool
	var oldPtr *v1alpha1.IPPool
	switch req.Operation {
	case admissionv1.Delete:
		if err := h.Decoder.DecodeRaw(req.OldObject, &pool); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode IPPool being deleted: %w", err))
		}
	case admissionv1.Update:
		if err := h.Decoder.DecodeRaw(req.OldObject, &old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old IPPool: %w", err))
		}
		oldPtr = &old
		fallthrough
	default:
		if err := h.Decoder.Decode(req, &pool); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode IPPool: %w", err))
		}
	}
	es, err := ValidateIPPool(ctx, h.Lookup, h.Options, req.Operation, &pool, oldPtr)
	if err != nil || len(es) > 0 {
		return h.answer("IPPool", req, es, err)
	}
	ws, err := IPPoolWarnings(ctx, h.Lookup, req.Operation, &pool, oldPtr)
	return h.answer("IPPool", req, nil, err).WithWarnings(ws...)
}

func (h Handlers) validateVMNetCfg(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation == admissionv1.Delete {
		return admission.Allowed("")
	}
	var cfg, old v1alpha1.VirtualMachineNetworkConfig
	var oldPtr *v1alpha1.VirtualMachineNetworkConfig
	if err := h.Decoder.Decode(req, &cfg); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode VirtualMachineNetworkConfig: %w", err))
	}
	if req.Operation == admissionv1.Update {
		if err := h.Decoder.DecodeRaw(req.OldObject, &old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old VirtualMachineNetworkConfig: %w", err))
		}
		oldPtr = &old
	}
	es, err := ValidateVMNetCfg(ctx, h.Lookup, req.Operation, &cfg, oldPtr)
	resp := h.answer("VirtualMachineNetworkConfig", req, es, err)
	if resp.Allowed && (oldPtr == nil || !equality.Semantic.DeepEqual(oldPtr.Spec, cfg.Spec)) {
		resp = resp.WithWarnings(VMNetCfgWarnings(&cfg)...)
	}
	return resp
}

func (h Handlers) answer(kind string, req admission.Request, es FieldErrors, err error) admission.Response {
	obj := req.Namespace + "/" + req.Name
	if err != nil {
		h.Log.Error(err, "validation could not read the cluster", "kind", kind, "object", obj)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("validate %s %s: %w", kind, obj, err))
	}
	if len(es) > 0 {
		h.Log.V(1).Info("refused", "kind", kind, "object", obj, "operation", req.Operation, "reasons", es.Error())
		return admission.Denied(es.Error())
	}
	return admission.Allowed("")
}

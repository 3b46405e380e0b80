package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPv4Address is a dotted-quad IPv4 address. Each field of this type
// carries its own format and length markers: pool.exclude has none, since
// Harvester admits any string there.
type IPv4Address string

// ConditionType names a condition of an IPPool or VirtualMachineNetworkConfig.
type ConditionType string

// Condition is Harvester's (wrangler's) generic condition, kept field for
// field so that status written by either controller reads the same.
type Condition struct {
	// Type of the condition.
	Type ConditionType `json:"type"`
	// Status of the condition, one of True, False, Unknown.
	Status corev1.ConditionStatus `json:"status"`
	// The last time this condition was updated.
	// +optional
	LastUpdateTime string `json:"lastUpdateTime,omitempty"`
	// Last time the condition transitioned from one status to another.
	// +optional
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
	// The reason for the condition's last transition.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Human-readable message indicating details about last transition.
	// +optional
	Message string `json:"message,omitempty"`
}

// FindCondition returns the condition of type t, or nil.
func FindCondition(conds []Condition, t ConditionType) *Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// SetCondition sets a condition in conds and reports whether anything changed.
// LastTransitionTime moves only when the status changes; LastUpdateTime moves
// whenever status, reason or message change, so an unchanged condition causes
// no write.
func SetCondition(conds *[]Condition, t ConditionType, status corev1.ConditionStatus, reason, message string, now metav1.Time) bool {
	ts := now.UTC().Format("2006-01-02T15:04:05Z")
	c := FindCondition(*conds, t)
	if c == nil {
		*conds = append(*conds, Condition{Type: t, Status: status, Reason: reason, Message: message,
			LastUpdateTime: ts, LastTransitionTime: ts})
		return true
	}
	if c.Status == status && c.Reason == reason && c.Message == message {
		return false
	}
	if c.Status != status {
		c.LastTransitionTime = ts
	}
	c.Status, c.Reason, c.Message, c.LastUpdateTime = status, reason, message, ts
	return true
}

// IsConditionTrue reports whether condition t is present and True.
func IsConditionTrue(conds []Condition, t ConditionType) bool {
	c := FindCondition(conds, t)
	return c != nil && c.Status == corev1.ConditionTrue
}

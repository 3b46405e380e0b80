package controller

import (
	"encoding/base64"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// ownerToken is how status.ipv4.owners records a VMNetCfg's UID: a UUID in
// unpadded base64url (22 characters instead of 36, which keeps a full
// pool's status within etcd's object limit); any other UID as it is.
func ownerToken(uid types.UID) string {
	h := strings.ReplaceAll(string(uid), "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 || len(uid) != 36 {
		return string(uid)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

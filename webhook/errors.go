package webhook

import (
	"fmt"
	"strings"
)

// FieldError is one reason an object is refused. Its message always names
// the field and the offending value, so that a user reading kubectl's output
// knows what to change without reading our code.
type FieldError struct {
	Field  string // path such as spec.ipv4Config.router
	Value  string // the offending value as written by the user
	Reason string // what is wrong with it, e.g. "is not an IPv4 address"
}

func (e FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s: %s %s", e.Field, e.Value, e.Reason)
}

// FieldErrors is every reason an object is refused; nil or empty means valid.
type FieldErrors []FieldError

func (es *FieldErrors) add(field, value, reason string, args ...any) {
	if len(args) > 0 {
		reason = fmt.Sprintf(reason, args...)
	}
	*es = append(*es, FieldError{Field: field, Value: value, Reason: reason})
}

// Error joins the messages; a long list is cut so that the apiserver's
// answer stays readable.
func (es FieldErrors) Error() string {
	const maxShown = 10
	msgs := make([]string, 0, min(len(es), maxShown)+1)
	for i, e := range es {
		if i == maxShown {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(es)-maxShown))
			break
		}
		msgs = append(msgs, e.Error())
	}
	return strings.Join(msgs, "; ")
}

// Err returns nil for an empty list, so callers can write `if err := es.Err(); err != nil`.
func (es FieldErrors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// newViolations is the errors of es that were not in old: the same reason
// for the same value of the same field. List indexes are left out of the
// comparison, so that removing an earlier entry (which shifts the rest)
// does not make a kept violation count as new.
func newViolations(es, old FieldErrors) FieldErrors {
	seen := make(map[FieldError]bool, len(old))
	for _, e := range old {
		seen[withoutIndexes(e)] = true
	}
	var out FieldErrors
	for _, e := range es {
		if !seen[withoutIndexes(e)] {
			out = append(out, e)
		}
	}
	return out
}

// withoutIndexes is e with every [n] of its field path removed.
func withoutIndexes(e FieldError) FieldError {
	var b strings.Builder
	inIndex := false
	for _, r := range e.Field {
		switch {
		case r == '[':
			inIndex = true
		case r == ']' && inIndex:
			inIndex = false
		case !inIndex:
			b.WriteRune(r)
		}
	}
	e.Field = b.String()
	return e
}

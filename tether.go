// Package tether holds the domain of the Tether IoT backend: tenants,
// devices, credentials, telemetry points and the error codes every edge
// maps to its own protocol. It depends on the standard library only; the
// gateways, the bus, the stores and the APIs all depend on it and never on
// each other.
package tether

import (
	"errors"
	"fmt"
)

// Error codes. An edge (HTTP, MQTT, CoAP) maps each code to its protocol's
// status exactly once.
const (
	EINVALID      = "invalid"      // the input is wrong; the message says what to fix
	ENOTFOUND     = "not_found"    // the addressed thing does not exist (for this tenant)
	ECONFLICT     = "conflict"     // the thing exists already or changed meanwhile
	EUNAUTHORIZED = "unauthorized" // no credential, or a wrong one
	EFORBIDDEN    = "forbidden"    // a valid credential that may not do this
	ETOOLARGE     = "too_large"    // the input is over a configured size limit
	ETOOMANY      = "too_many"     // over a rate limit; try again later
	EUNSUPPORTED  = "unsupported"  // the input's format (content type) is not one Tether reads
	EUNAVAILABLE  = "unavailable"  // a dependency (the bus, the store) cannot take it now
	EINTERNAL     = "internal"     // a bug or an unexpected failure
)

// Error is an error with a code and a message meant for the person or
// program that caused it. Wrap lower-level errors with fmt.Errorf for logs;
// return an *Error where the caller should see the message.
type Error struct {
	Code    string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string { return fmt.Sprintf("tether: %s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the message of the first *Error in err's chain, or a
// generic message that leaks nothing of an internal error.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Message
	default:
		return "internal error"
	}
}

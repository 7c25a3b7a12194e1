package cache

import (
	"errors"
	"fmt"
	"net/http"
)

// Error kinds. Core code wraps them with %w; each protocol maps them to its
// own status codes and error shapes at the edge.
var (
	ErrNotFound            = errors.New("not found")
	ErrConflict            = errors.New("already exists")
	ErrInvalid             = errors.New("invalid request")
	ErrUnauthenticated     = errors.New("unauthenticated")
	ErrForbidden           = errors.New("forbidden")
	ErrTooLarge            = errors.New("too large")
	ErrLengthRequired      = errors.New("length required")
	ErrInsufficientStorage = errors.New("insufficient storage")
)

func errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

// httpStatus maps an error kind to an HTTP status code.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrLengthRequired):
		return http.StatusLengthRequired
	case errors.Is(err, ErrInsufficientStorage):
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// publicMessage is the text of err a client may see: the whole message for
// a known kind, a generic one for internal errors (which are logged).
func (s *Service) publicMessage(err error) string {
	if httpStatus(err) == http.StatusInternalServerError {
		s.log.Error("cache: internal error", "err", err)
		return "internal error"
	}
	return err.Error()
}

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

// kind is how each protocol reports an error kind.
type kind struct {
	status int    // HTTP status
	twirp  string // Twirp error code (v2)
	azure  string // Azure Blob error code (blob URLs)
	v1     string // typeKey of the legacy API's error body
}

// classify maps an error to its kind; anything unknown is internal.
func classify(err error) kind {
	switch {
	case errors.Is(err, ErrNotFound):
		return kind{http.StatusNotFound, "not_found", "BlobNotFound", "ArtifactCacheNotFoundException"}
	case errors.Is(err, ErrConflict):
		return kind{http.StatusConflict, "already_exists", "BlobImmutableDueToPolicy", "ArtifactCacheAlreadyExistsException"}
	case errors.Is(err, ErrInvalid):
		return kind{http.StatusBadRequest, "invalid_argument", "InvalidInput", "ArgumentException"}
	case errors.Is(err, ErrUnauthenticated):
		return kind{http.StatusUnauthorized, "unauthenticated", "AuthenticationFailed", "AccessDeniedException"}
	case errors.Is(err, ErrForbidden):
		return kind{http.StatusForbidden, "permission_denied", "AuthenticationFailed", "AccessDeniedException"}
	case errors.Is(err, ErrTooLarge):
		return kind{http.StatusRequestEntityTooLarge, "resource_exhausted", "RequestBodyTooLarge", "ArgumentException"}
	case errors.Is(err, ErrLengthRequired):
		return kind{http.StatusLengthRequired, "invalid_argument", "MissingContentLengthHeader", "ArgumentException"}
	case errors.Is(err, ErrInsufficientStorage):
		// Twirp has no such code; the client treats 429 as "do not retry".
		return kind{http.StatusInsufficientStorage, "resource_exhausted", "InsufficientStorage", "ArgumentException"}
	}
	return kind{http.StatusInternalServerError, "internal", "InternalError", "Exception"}
}

// publicMessage is the text of err a client may see: the whole message for
// a known kind, a generic one for internal errors (which are logged).
func (s *Service) publicMessage(err error) string {
	if classify(err).status == http.StatusInternalServerError {
		s.log.Error("cache: internal error", "err", err)
		return "internal error"
	}
	return err.Error()
}

package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kilnci/kiln/internal/forge"
)

// hookMemoryBody is how much of a webhook body is held in memory while it
// is verified; the rest of a larger one goes to a file (real pushes are a
// few KiB; GitHub caps a delivery at 25 MiB).
const hookMemoryBody = 256 << 10

// hookRefusal is a webhook delivery refused: the answer, and what the
// server's log and metrics say about it.
type hookRefusal struct {
	status    int
	code, msg string // the answer's error code and message
	reason    string // the log's reason and the metrics' result
	detail    string // for the log only, when it says more than msg
}

// hookFrom names a delivery in the server's log: the forge and project of
// its URL (unverified, so cut short).
type hookFrom struct {
	forge, project string
}

// refuseHook answers a refused delivery and logs it with the forge, the
// project, the delivery id (unverified, as its header says), the reason and
// the remote address, so that an admin sees a forge's refused deliveries in
// the server's own log.
func (s *Server) refuseHook(w http.ResponseWriter, r *http.Request, from hookFrom, ref *hookRefusal) {
	if ref.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	writeError(w, ref.status, ref.code, ref.msg)
	detail := ref.detail
	if detail == "" {
		detail = ref.msg
	}
	s.log.Warn("webhook refused", "forge", clipLog(from.forge, 64), "project", clipLog(from.project, 128),
		"delivery", forge.DeliveryID(from.forge, r.Header), "reason", ref.reason, "status", ref.status,
		"remote", r.RemoteAddr, "err", detail)
}

// readHook reads a webhook's body and verifies and parses it, holding at
// most hookMemoryBody bytes of an unverified body in memory. Checks, in
// order: forge known (404); what the header alone proves (a missing or
// ill-formed signature, GitLab's token: 401, the body read and discarded
// so that the forge gets the answer, not a reset connection); declared
// length (413); a free reading slot, waited for a while (503); the body
// read within the limit (413) and the read timeout (400), its HMAC
// computed as it is read; the signature (401); the payload (400). On a
// refusal it answers nothing: the caller does (refuseHook).
func (s *Server) readHook(w http.ResponseWriter, r *http.Request, forgeName, secret string) (*forge.Event, *hookRefusal) {
	if rc := http.NewResponseController(w); s.cfg.WebhookReadTimeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(s.cfg.WebhookReadTimeout))
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxWebhookBody)
	v, err := forge.NewVerifier(forgeName, r.Header, secret)
	switch {
	case errors.Is(err, forge.ErrUnknownForge):
		return nil, &hookRefusal{status: http.StatusNotFound, code: "not_found", msg: err.Error(), reason: "unknown_forge"}
	case err != nil:
		// A client that waits for 100 Continue has sent no body yet: it
		// gets the answer without sending one.
		if !strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
			_, _ = io.Copy(io.Discard, body)
		}
		return nil, &hookRefusal{status: http.StatusUnauthorized, code: "bad_signature", msg: err.Error(), reason: "bad_signature"}
	}
	tooLarge := &hookRefusal{status: http.StatusRequestEntityTooLarge, code: "too_large",
		msg: fmt.Sprintf("webhook body over the limit of %d bytes", s.cfg.MaxWebhookBody), reason: "too_large"}
	if r.ContentLength > s.cfg.MaxWebhookBody {
		return nil, tooLarge
	}
	if !s.hookSlot(r.Context()) {
		return nil, &hookRefusal{status: http.StatusServiceUnavailable, code: "busy", reason: "busy",
			msg: fmt.Sprintf("%d webhook deliveries are being read already; try again later", cap(s.hookSlots))}
	}
	defer func() { <-s.hookSlots; s.metrics.WebhookBodiesReading.Dec() }()
	s.metrics.WebhookBodiesReading.Inc()

	sp := &spool{dir: s.cfg.SpoolDir, limit: hookMemoryBody, spilled: s.metrics.WebhookBodiesSpooled.Inc}
	defer sp.Close()
	if _, err := io.Copy(io.MultiWriter(v, sp), body); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge
		}
		if errors.Is(err, errSpool) {
			return nil, spoolFailed(err)
		}
		return nil, &hookRefusal{status: http.StatusBadRequest, code: "bad_request", msg: "reading body: " + err.Error(), reason: "unreadable"}
	}
	if err := v.Verify(); err != nil {
		return nil, &hookRefusal{status: http.StatusUnauthorized, code: "bad_signature", msg: err.Error(), reason: "bad_signature"}
	}
	data, err := sp.Bytes()
	if err != nil {
		return nil, spoolFailed(err)
	}
	ev, err := forge.ParseVerified(forgeName, r.Header, data)
	if err != nil {
		return nil, &hookRefusal{status: http.StatusBadRequest, code: "malformed", msg: err.Error(), reason: "malformed"}
	}
	return ev, nil
}

// hookSlot takes one of the slots that bound the webhook bodies read at
// once, waiting at most WebhookQueueWait for one.
func (s *Server) hookSlot(ctx context.Context) bool {
	select {
	case s.hookSlots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(s.cfg.WebhookQueueWait)
	defer t.Stop()
	select {
	case s.hookSlots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// spoolFailed is the answer when the server cannot keep a body (its disk
// is full, say): not the sender's fault, and not forever. The cause, with
// the server's paths, goes to the log only.
func spoolFailed(err error) *hookRefusal {
	return &hookRefusal{status: http.StatusServiceUnavailable, code: "unavailable", reason: "error",
		msg: "the server cannot keep the webhook body now; try again later", detail: err.Error()}
}

// errSpool is a failure of the server's own to keep a body.
var errSpool = errors.New("spool webhook body")

// spool holds a webhook body while it is verified: in memory up to limit
// bytes, past that in a file of its own (mode 0600) in dir, removed by
// Close.
type spool struct {
	dir     string
	limit   int
	spilled func()
	buf     []byte
	f       *os.File
}

func (sp *spool) Write(p []byte) (int, error) {
	if sp.f == nil {
		if len(sp.buf)+len(p) <= sp.limit {
			sp.buf = append(sp.buf, p...)
			return len(p), nil
		}
		f, err := os.CreateTemp(sp.dir, "webhook-*")
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errSpool, err)
		}
		sp.f = f
		sp.spilled()
		if _, err := f.Write(sp.buf); err != nil {
			return 0, fmt.Errorf("%w: %w", errSpool, err)
		}
		sp.buf = nil
	}
	n, err := sp.f.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errSpool, err)
	}
	return n, err
}

// Bytes returns the whole body, read back from its file if it has one:
// only ever called once the body is known to be authentic.
func (sp *spool) Bytes() ([]byte, error) {
	if sp.f == nil {
		return sp.buf, nil
	}
	fi, err := sp.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSpool, err)
	}
	data := make([]byte, fi.Size())
	if _, err := sp.f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%w: read back: %w", errSpool, err)
	}
	return data, nil
}

func (sp *spool) Close() {
	if sp.f != nil {
		sp.f.Close()
		os.Remove(sp.f.Name())
	}
}

// clipLog shortens s to at most n bytes, for logging what a request says.
func clipLog(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

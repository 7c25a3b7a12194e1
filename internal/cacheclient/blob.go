package cacheclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// The blob side of the protocol: the Azure Blob REST requests the real
// client's Azure SDK sends to the signed URLs (which authorize themselves:
// no Authorization header). Uploads are Put Blob for an archive that fits
// in one block, otherwise Put Block for each block and Put Block List to
// commit them in order; every upload answer is 201. Downloads are one GET.

const (
	defaultBlockSize = 32 << 20
	defaultUploads   = 2
	azureVersion     = "2025-11-05"
)

// uploader is the io.Writer Save's archive is written to. It cuts the
// stream into blocks and uploads up to Uploads of them at once while the
// next one fills. Write blocks when every buffer is in flight, which is
// what bounds memory to Uploads+1 blocks: the archive is never whole in
// memory. The first failed upload cancels the others and fails every later
// Write, which stops the archiver.
type uploader struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	url    string

	size  int
	buf   []byte      // the block being filled; nil between blocks
	free  chan []byte // buffers back from finished uploads
	alloc int         // buffers allocated so far, at most cap(free)
	ids   []string    // block ids in archive order
	n     int64       // bytes written

	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
	done bool
}

func (c *Client) newUploader(ctx context.Context, signedURL string) *uploader {
	size, uploads := c.BlockSize, c.Uploads
	if size <= 0 {
		size = defaultBlockSize
	}
	if uploads <= 0 {
		uploads = defaultUploads
	}
	ctx, cancel := context.WithCancel(ctx)
	return &uploader{c: c, ctx: ctx, cancel: cancel, url: signedURL, size: size, free: make(chan []byte, uploads+1)}
}

func (u *uploader) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
	u.cancel()
}

func (u *uploader) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

func (u *uploader) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if err := u.failed(); err != nil {
			return written, err
		}
		if u.buf == nil {
			b, err := u.buffer()
			if err != nil {
				return written, err
			}
			u.buf = b
		}
		k := copy(u.buf[len(u.buf):cap(u.buf)], p)
		u.buf = u.buf[:len(u.buf)+k]
		p, written, u.n = p[k:], written+k, u.n+int64(k)
		if len(u.buf) == cap(u.buf) {
			u.sendBlock()
		}
	}
	return written, nil
}

// buffer returns an empty block buffer, waiting for an upload to finish
// when all are in use.
func (u *uploader) buffer() ([]byte, error) {
	if u.alloc < cap(u.free) {
		select {
		case b := <-u.free:
			return b[:0], nil
		default:
			u.alloc++
			return make([]byte, 0, u.size), nil
		}
	}
	select {
	case b := <-u.free:
		return b[:0], nil
	case <-u.ctx.Done():
		if err := u.failed(); err != nil {
			return nil, err
		}
		return nil, u.ctx.Err()
	}
}

// sendBlock uploads the filled buffer as the next block.
func (u *uploader) sendBlock() {
	// Azure wants the ids of one blob to have the same length.
	id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "kiln-block-%08d", len(u.ids)))
	u.ids = append(u.ids, id)
	b := u.buf
	u.buf = nil
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() { u.free <- b }()
		if err := u.c.putBlob(u.ctx, "Put Block", u.url, url.Values{"comp": {"block"}, "blockid": {id}}, nil, b); err != nil {
			u.fail(err)
		}
	}()
}

// close uploads what is left and commits the blob.
func (u *uploader) close() error {
	defer u.cancel()
	if len(u.ids) == 0 {
		// It all fits in one block: one Put Blob.
		hdr := http.Header{"X-Ms-Blob-Type": {"BlockBlob"}}
		return u.c.putBlob(u.ctx, "Put Blob", u.url, nil, hdr, u.buf)
	}
	if len(u.buf) > 0 {
		u.sendBlock()
	}
	u.wg.Wait()
	if err := u.failed(); err != nil {
		return err
	}
	var list bytes.Buffer
	list.WriteString(xml.Header + "<BlockList>")
	for _, id := range u.ids {
		list.WriteString("<Latest>" + id + "</Latest>") // base64: nothing to escape
	}
	list.WriteString("</BlockList>")
	hdr := http.Header{"Content-Type": {"application/xml"}}
	return u.c.putBlob(u.ctx, "Put Block List", u.url, url.Values{"comp": {"blocklist"}}, hdr, list.Bytes())
}

// abort stops the uploads in flight and waits for them.
func (u *uploader) abort() {
	u.cancel()
	u.wg.Wait()
}

// blobURL adds query to a signed URL.
func blobURL(signed string, query url.Values) (string, error) {
	u, err := url.Parse(signed)
	if err != nil {
		return "", fmt.Errorf("cacheclient: bad blob URL from the service: %w", err)
	}
	q := u.Query()
	for k, v := range query {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// putBlob sends one upload request (Put Blob, Put Block or Put Block List)
// and expects 201.
func (c *Client) putBlob(ctx context.Context, op, signed string, query url.Values, hdr http.Header, body []byte) error {
	u, err := blobURL(signed, query)
	if err != nil {
		return err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("cacheclient: %s: %w", op, err)
	}
	r.Header.Set("x-ms-version", azureVersion)
	r.Header.Set("Content-Type", "application/octet-stream")
	for k, v := range hdr {
		r.Header[k] = v
	}
	res, err := c.http().Do(r)
	if err != nil {
		return fmt.Errorf("cacheclient: %s: %w", op, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		return azureError(op, res)
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
	return nil
}

// download starts a Get Blob of the whole archive. The body fails with
// io.ErrUnexpectedEOF if it ends before its Content-Length.
func (c *Client) download(ctx context.Context, signed string) (io.ReadCloser, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, signed, nil)
	if err != nil {
		return nil, fmt.Errorf("cacheclient: Get Blob: %w", err)
	}
	r.Header.Set("x-ms-version", azureVersion)
	res, err := c.http().Do(r)
	if err != nil {
		return nil, fmt.Errorf("cacheclient: Get Blob: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		defer res.Body.Close()
		return nil, azureError("Get Blob", res)
	}
	return res.Body, nil
}

// azureError reads an Azure error answer: x-ms-error-code and an XML
// <Error><Code/><Message/></Error> body.
func azureError(op string, res *http.Response) error {
	e := &Error{Op: op, Status: res.StatusCode, Code: res.Header.Get("x-ms-error-code")}
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var body struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	if xml.Unmarshal(raw, &body) == nil {
		if e.Code == "" {
			e.Code = body.Code
		}
		e.Message = body.Message
	} else {
		e.Message = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
	}
	return e
}

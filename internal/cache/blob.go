package cache

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
)

// The blob URLs: the subset of the Azure Blob REST API that the Azure SDK's
// BlockBlobClient.uploadFile uses (Put Blob for archives up to its
// single-shot size, Put Block + Put Block List above it) and a download by
// GET or HEAD with Range (and x-ms-range, which the SDK sends instead).
// URLs are signed per entry and operation (token.go); the SDK sends no
// Authorization header. Errors are Azure's XML <Error> bodies with the
// x-ms-error-code header.

const (
	maxBlockBytes     = 4000 << 20 // Azure's Put Block limit
	maxBlockIDBytes   = 64         // Azure's limit on a decoded block id
	maxBlockListBytes = 8 << 20
	azureAPIVersion   = "2025-11-05"
)

func (s *Service) routeBlob(mux *http.ServeMux) {
	mux.HandleFunc("PUT "+blobPrefix+"{id}/{name}", s.serveBlobPut)
	mux.HandleFunc("GET "+blobPrefix+"{id}/{name}", s.serveBlobGet) // and HEAD
}

// blobEntry resolves a blob URL to its entry after checking the signature:
// a reserved entry to write, a finalized one to read.
func (s *Service) blobEntry(r *http.Request, op string) (entryRow, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 || r.PathValue("name") != "cache" {
		return entryRow{}, errorf(ErrNotFound, "no such blob")
	}
	if err := s.verifyBlobURL(id, op, r.URL.Query()); err != nil {
		return entryRow{}, err
	}
	e, err := s.queryEntry(r.Context(), `id = ?`, id)
	switch {
	case err != nil:
		return e, errorf(err, "no such blob")
	case op == opWrite && e.State != stateReserved:
		return e, errorf(ErrConflict, "the cache entry is already finalized and cannot change")
	case op == opRead && e.State != stateReady:
		return e, errorf(ErrNotFound, "no such blob")
	}
	return e, nil
}

func (s *Service) serveBlobPut(w http.ResponseWriter, r *http.Request) {
	azureHeaders(w, r)
	e, err := s.blobEntry(r, opWrite)
	if err != nil {
		s.writeAzureErr(w, "", err)
		return
	}
	switch comp := r.URL.Query().Get("comp"); comp {
	case "block":
		s.putBlock(w, r, e)
	case "blocklist":
		s.putBlockList(w, r, e)
	case "":
		s.putBlob(w, r, e)
	default:
		azureError(w, http.StatusBadRequest, "InvalidQueryParameterValue", "unsupported comp="+comp)
	}
}

// putBlock stages one block. Blocks may arrive in any order and in
// parallel; a block sent again replaces the earlier one.
func (s *Service) putBlock(w http.ResponseWriter, r *http.Request, e entryRow) {
	blockID := r.URL.Query().Get("blockid")
	if raw, err := base64.StdEncoding.DecodeString(blockID); err != nil || len(raw) == 0 || len(raw) > maxBlockIDBytes {
		azureError(w, http.StatusBadRequest, "InvalidQueryParameterValue", "blockid must be base64 of 1 to 64 bytes")
		return
	}
	if r.ContentLength > maxBlockBytes {
		azureError(w, http.StatusRequestEntityTooLarge, "RequestBodyTooLarge", "a block is at most 4000 MiB")
		return
	}
	sum, err := s.receive(r, e, r.ContentLength, s.files.block(e.ID, blockID))
	if err != nil {
		s.writeAzureErr(w, "", err)
		return
	}
	w.Header().Set("Content-MD5", sum)
	w.WriteHeader(http.StatusCreated)
}

// putBlob stores the whole archive in one request.
func (s *Service) putBlob(w http.ResponseWriter, r *http.Request, e entryRow) {
	if t := r.Header.Get("x-ms-blob-type"); t != "BlockBlob" {
		azureError(w, http.StatusBadRequest, "InvalidHeaderValue", "x-ms-blob-type must be BlockBlob, got "+strconv.Quote(t))
		return
	}
	sum, err := s.receive(r, e, r.ContentLength, s.files.data(e.ID))
	if err != nil {
		s.writeAzureErr(w, "", err)
		return
	}
	// Put Blob replaces the blob and drops uncommitted blocks.
	unlock := s.lock(e.ID)
	s.removeAll(s.files.blocks(e.ID))
	unlock()
	w.Header().Set("Content-MD5", sum)
	blobHeaders(w, e.ID, s.now())
	w.WriteHeader(http.StatusCreated)
}

// receive streams a request body of exactly n bytes (n < 0: the request
// had no Content-Length) to a temporary file, after making room for it, and
// moves it to dst if the entry is still reserved. It returns the body's
// base64 MD5.
func (s *Service) receive(r *http.Request, e entryRow, n int64, dst string) (string, error) {
	if n < 0 {
		return "", errorf(ErrLengthRequired, "Content-Length is required")
	}
	if err := s.admit(r.Context(), e, n); err != nil {
		return "", err
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	h := md5.New()
	err = copyExact(io.MultiWriter(tmp, h), r.Body, n)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cache: %w", cerr)
	}
	if err != nil {
		return "", err
	}
	if err := s.commitFile(r, e.ID, tmp.Name(), dst); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

// commitFile renames tmp to dst under the entry's lock, unless the entry
// was finalized or deleted while the body was arriving.
func (s *Service) commitFile(r *http.Request, id int64, tmp, dst string) error {
	defer s.lock(id)()
	e, err := s.queryEntry(r.Context(), `id = ?`, id)
	if err != nil {
		return errorf(err, "the cache entry was removed during the upload")
	}
	if e.State != stateReserved {
		return errorf(ErrConflict, "the cache entry was finalized during the upload")
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}

type blockList struct {
	Blocks []struct {
		XMLName xml.Name
		ID      string `xml:",chardata"`
	} `xml:",any"`
}

// putBlockList commits the named blocks, in the listed order, as the blob.
func (s *Service) putBlockList(w http.ResponseWriter, r *http.Request, e entryRow) {
	var list blockList
	if err := xml.NewDecoder(http.MaxBytesReader(w, r.Body, maxBlockListBytes)).Decode(&list); err != nil {
		azureError(w, http.StatusBadRequest, "InvalidXmlDocument", "bad block list: "+err.Error())
		return
	}
	ids := make([]string, 0, len(list.Blocks))
	for _, b := range list.Blocks {
		if b.XMLName.Local != "Latest" && b.XMLName.Local != "Uncommitted" {
			azureError(w, http.StatusBadRequest, "InvalidBlockList", "only uncommitted blocks can be committed, got <"+b.XMLName.Local+">")
			return
		}
		ids = append(ids, b.ID)
	}
	unlock := s.lock(e.ID)
	cur, err := s.queryEntry(r.Context(), `id = ?`, e.ID)
	if err == nil && cur.State != stateReserved {
		err = errorf(ErrConflict, "the cache entry is already finalized and cannot change")
	}
	if err == nil {
		_, err = s.files.assemble(e.ID, ids)
	}
	unlock()
	if err != nil {
		s.writeAzureErr(w, "InvalidBlockList", err)
		return
	}
	blobHeaders(w, e.ID, s.now())
	w.WriteHeader(http.StatusCreated)
}

// serveBlobGet downloads a finalized entry (GET, HEAD, Range, x-ms-range).
func (s *Service) serveBlobGet(w http.ResponseWriter, r *http.Request) {
	azureHeaders(w, r)
	e, err := s.blobEntry(r, opRead)
	if err != nil {
		s.writeAzureErr(w, "", err)
		return
	}
	f, err := s.blobs.Open(r.Context(), blobName(e.ID))
	if errors.Is(err, blobstore.ErrNotFound) {
		err = errorf(ErrNotFound, "no such blob") // evicted meanwhile
	}
	if err != nil {
		s.writeAzureErr(w, "", err)
		return
	}
	defer f.Close()
	if r.Header.Get("Range") == "" && r.Header.Get("x-ms-range") != "" {
		r.Header.Set("Range", r.Header.Get("x-ms-range"))
	}
	mod := time.Unix(0, e.Finalized)
	blobHeaders(w, e.ID, mod)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("x-ms-blob-type", "BlockBlob")
	http.ServeContent(w, r, "", mod, f) // streams; sendfile where it can
}

// azureHeaders sets the headers every Azure Blob response carries.
func azureHeaders(w http.ResponseWriter, r *http.Request) {
	var id [16]byte
	rand.Read(id[:])
	h := w.Header()
	h.Set("x-ms-request-id", fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:]))
	if c := r.Header.Get("x-ms-client-request-id"); c != "" {
		h.Set("x-ms-client-request-id", c)
	}
	v := r.Header.Get("x-ms-version")
	if v == "" {
		v = azureAPIVersion
	}
	h.Set("x-ms-version", v)
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
}

// blobHeaders sets the ETag and Last-Modified of a blob version.
func blobHeaders(w http.ResponseWriter, id int64, mod time.Time) {
	h := w.Header()
	h.Set("ETag", fmt.Sprintf(`"0x%X%X"`, id, mod.UnixNano()))
	h.Set("Last-Modified", mod.UTC().Format(http.TimeFormat))
	h.Set("x-ms-request-server-encrypted", "false")
}

// writeAzureErr writes err as an Azure error; invalidCode is the code for
// ErrInvalid, which depends on the operation.
func (s *Service) writeAzureErr(w http.ResponseWriter, invalidCode string, err error) {
	k := classify(err)
	if k.azure == "InvalidInput" && invalidCode != "" {
		k.azure = invalidCode
	}
	azureError(w, k.status, k.azure, s.publicMessage(err))
}

func azureError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-ms-error-code", code)
	w.WriteHeader(status)
	var b struct {
		XMLName xml.Name `xml:"Error"`
		Code    string   `xml:"Code"`
		Message string   `xml:"Message"`
	}
	b.Code, b.Message = code, msg
	io.WriteString(w, xml.Header)
	xml.NewEncoder(w).Encode(b)
}

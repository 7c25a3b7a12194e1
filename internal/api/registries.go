package api

import (
	"fmt"
	"net/http"
	"regexp"
)

// registryHost is a registry's host as image names spell it: a DNS name
// or an IPv4 address, lowercase, with an optional port; no scheme, no
// path (pipeline.ImageHost's keys).
var registryHost = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$`)

// maxRegistryField bounds a registry's user name and password.
const maxRegistryField = 4096

// RegistryRequest is the body of PUT …/registries/{host}.
type RegistryRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (s *Server) listRegistries(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	regs, err := s.store.Registries(r.Context(), p.ID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := []RegistryView{}
	for _, reg := range regs {
		out = append(out, registryView(reg))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) setRegistry(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	host := r.PathValue("host")
	if !registryHost.MatchString(host) || len(host) > 255 {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("registry host %q: want a host name as image names spell it (registry.example.com, or host:5000), lowercase, without a scheme or a path", host))
		return
	}
	var req RegistryRequest
	if !decode(w, r, &req) {
		return
	}
	switch {
	case req.Username == "":
		writeError(w, http.StatusBadRequest, "invalid", "username: required")
		return
	case req.Password == "":
		writeError(w, http.StatusBadRequest, "invalid", "password: required")
		return
	case len(req.Username) > maxRegistryField || len(req.Password) > maxRegistryField:
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("username and password: at most %d bytes each", maxRegistryField))
		return
	}
	if err := s.store.SetRegistry(r.Context(), p.ID, host, req.Username, req.Password); err != nil {
		s.storeError(w, err)
		return
	}
	s.record(r, "registry.set", registryTarget(p.Name, host), map[string]string{"username": req.Username, "password": "set"})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteRegistry(w http.ResponseWriter, r *http.Request) {
	p, ok := s.project(w, r)
	if !ok {
		return
	}
	host := r.PathValue("host")
	if err := s.store.DeleteRegistry(r.Context(), p.ID, host); err != nil {
		s.storeError(w, fmt.Errorf("registry %q: %w", host, err))
		return
	}
	s.record(r, "registry.delete", registryTarget(p.Name, host), nil)
	w.WriteHeader(http.StatusNoContent)
}

// registryTarget is a project's registry credentials as the audit log
// names them (the host: the password is never logged).
func registryTarget(project, host string) string { return "registry:" + project + "/" + host }

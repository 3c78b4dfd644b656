package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
)

// maxGrantBodyBytes bounds the body of POST …/grants.
const maxGrantBodyBytes = 4 << 10

// grantBody is the body of POST /v1/users/me/grants.
type grantBody struct {
	To         string               `json:"to"`
	Categories []pulsebase.Category `json:"categories"`
	Until      time.Time            `json:"until"`
}

// grantView is a grant as the API shows it to its owner.
type grantView struct {
	ID         string               `json:"id"`
	To         string               `json:"to"`
	Categories []pulsebase.Category `json:"categories"`
	Until      time.Time            `json:"until"`
	Created    time.Time            `json:"created"`
	// Active is false once the grant has expired (it is listed until it is pruned).
	Active bool `json:"active"`
}

// grantKind is the kind of record a grantee's sealed subject is bound to.
const grantKind = "grant"

func (s *Server) grantsAvailable(w http.ResponseWriter) bool {
	if s.deps.Grants == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "grants are not served here")
		return false
	}
	return true
}

// handleCreateGrant lets the caller's coach (named by their external subject, as in
// their tokens) read some categories of the caller's data until a time.
func (s *Server) handleCreateGrant(w http.ResponseWriter, r *http.Request) {
	if !s.grantsAvailable(w) {
		return
	}
	var body grantBody
	if !decodeJSONBody(w, r, &body, maxGrantBodyBytes) {
		return
	}
	body.To = strings.TrimSpace(body.To)
	if body.To == "" || len(body.To) > 512 {
		writeProblem(w, pulsebase.EINVALID, "to must name the grantee's subject (1 to 512 characters)")
		return
	}
	usr := owner(r)
	grantee, err := s.deps.Users.Resolve(r.Context(), body.To)
	if err != nil {
		s.internalError(w, r, "resolve grantee", err)
		return
	}
	keys, err := s.deps.Vault.UserKeys(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "grant keys", err)
		return
	}
	id := auth.NewGrantID()
	to, err := keys.Seal(grantKind, id, []byte(body.To))
	if err != nil {
		s.internalError(w, r, "seal grantee", err)
		return
	}
	g, err := s.deps.Grants.Create(r.Context(), auth.Grant{ID: id, Owner: usr.ID, Grantee: grantee.ID,
		Categories: body.Categories, Until: body.Until, To: to}, time.Now())
	switch {
	case errors.Is(err, auth.ErrBadGrant):
		writeProblem(w, pulsebase.EINVALID, strings.TrimPrefix(err.Error(), auth.ErrBadGrant.Error()+": "))
		return
	case err != nil:
		s.deps.Log.Error("create grant", "err", err)
		writeProblem(w, pulsebase.EUNAVAILABLE, "the grant could not be stored; try again")
		return
	}
	w.Header().Set("Location", "/v1/users/me/grants/"+g.ID)
	writeJSON(w, http.StatusCreated, grantView{ID: g.ID, To: body.To, Categories: g.Categories, Until: g.Until,
		Created: g.Created, Active: true})
}

// grantsResponse is the body of GET /v1/users/me/grants.
type grantsResponse struct {
	Grants []grantView `json:"grants"`
}

func (s *Server) handleListGrants(w http.ResponseWriter, r *http.Request) {
	if !s.grantsAvailable(w) {
		return
	}
	usr := owner(r)
	keys, err := s.deps.Vault.UserKeys(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "grant keys", err)
		return
	}
	now := time.Now()
	out := grantsResponse{Grants: []grantView{}}
	for _, g := range s.deps.Grants.List(usr.ID) {
		to, err := keys.Open(grantKind, g.ID, g.To)
		if err != nil {
			s.serviceError(w, r, "open grantee", err)
			return
		}
		out.Grants = append(out.Grants, grantView{ID: g.ID, To: string(to), Categories: g.Categories,
			Until: g.Until, Created: g.Created, Active: now.Before(g.Until)})
	}
	writeJSON(w, http.StatusOK, out)
}

// handleDeleteGrant revokes a grant: the grantee's requests are refused from now on in
// every process, and their open sync connections to the owner close.
func (s *Server) handleDeleteGrant(w http.ResponseWriter, r *http.Request) {
	if !s.grantsAvailable(w) {
		return
	}
	found, err := s.deps.Grants.Delete(r.Context(), owner(r).ID, r.PathValue("id"))
	if err != nil {
		s.deps.Log.Error("delete grant", "err", err)
		writeProblem(w, pulsebase.EUNAVAILABLE, "the grant could not be deleted; try again")
		return
	}
	if !found {
		writeProblem(w, pulsebase.ENOTFOUND, "no such grant")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

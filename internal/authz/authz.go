// Package authz is Kiln's access policy: the roles a principal holds on
// each project, the role each action needs, and whether a principal may
// take an action. It knows nothing of HTTP or the store: the API says
// which action a route is, the store keeps users and role bindings, and
// Resolve turns a user's bindings into a Principal.
package authz

import (
	"fmt"
	"strings"
)

// Role is what a principal may do on a project; a higher role includes
// the lower ones.
type Role int

const (
	None Role = iota
	// Viewer reads builds, logs, caches, agents and the project.
	Viewer
	// Maintainer also cancels, retries, approves, rejects and triggers
	// builds, and deletes cache entries.
	Maintainer
	// Admin also changes the project's settings and secrets, and deletes
	// it. Admin on every project ("*") is the global admin.
	Admin
)

var roleNames = [...]string{None: "none", Viewer: "viewer", Maintainer: "maintainer", Admin: "admin"}

func (r Role) String() string {
	if r < None || r > Admin {
		return fmt.Sprintf("role(%d)", int(r))
	}
	return roleNames[r]
}

// ParseRole reads a role's name: viewer, maintainer or admin.
func ParseRole(s string) (Role, error) {
	for r := Viewer; r <= Admin; r++ {
		if roleNames[r] == s {
			return r, nil
		}
	}
	return None, fmt.Errorf("role %q: want viewer, maintainer or admin", s)
}

// Action is what a request does, as its route declares it.
type Action string

const (
	// On one project (the route names it).
	ViewProject   Action = "project.view"   // the project, its builds, logs and caches
	OperateBuilds Action = "builds.operate" // trigger, cancel, retry, approve, reject; delete a cache entry
	ManageProject Action = "project.manage" // settings, secrets (names too), delete
	// On no project in particular.
	ListProjects Action = "projects.list" // the lists of projects and builds: any principal, each sees what it may view
	ViewAgents   Action = "agents.view"   // the agents: a viewer of any project
	// ManageGlobal is the global settings: tokens, pools and runners,
	// creating projects, pruning caches, the audit log, role bindings.
	ManageGlobal Action = "global.manage"
)

// needs is the role each action needs.
var needs = map[Action]Role{
	ViewProject:   Viewer,
	OperateBuilds: Maintainer,
	ManageProject: Admin,
	ListProjects:  None,
	ViewAgents:    Viewer,
	ManageGlobal:  Admin,
}

// Needs is the role a needs; for ManageGlobal, on every project.
func Needs(a Action) Role { return needs[a] }

// Global says whether a is of the global settings (needs the global
// admin), not of one project.
func Global(a Action) bool { return a == ManageGlobal }

// Principal is who makes a request, with the roles it holds.
type Principal struct {
	// GlobalAdmin: an admin token, or a user with admin on "*".
	GlobalAdmin bool
	// roles by project name; AllProjects is every project.
	roles map[string]Role
}

// AllProjects is every project in a binding.
const AllProjects = "*"

// AdminPrincipal is an admin token's: everything, everywhere.
func AdminPrincipal() Principal { return Principal{GlobalAdmin: true} }

// Role is p's role on project: the highest of what it holds there and on
// every project.
func (p Principal) Role(project string) Role {
	if p.GlobalAdmin {
		return Admin
	}
	return max(p.roles[project], p.roles[AllProjects])
}

// Roles is p's roles by project name ("*": every project).
func (p Principal) Roles() map[string]Role {
	out := make(map[string]Role, len(p.roles))
	for k, v := range p.roles {
		out[k] = v
	}
	if p.GlobalAdmin {
		out[AllProjects] = Admin
	}
	return out
}

// Allowed says whether p may take a on project (the project's name; ""
// for an action of no one project). An action of one project with no
// project is allowed to a principal holding its role on some project
// (ViewAgents: a viewer of any project sees the agents).
func Allowed(p Principal, a Action, project string) bool {
	need, ok := needs[a]
	if !ok {
		return false // an action the policy does not know: refused
	}
	if p.GlobalAdmin || need == None {
		return true
	}
	if Global(a) {
		return false
	}
	if project != "" {
		return p.Role(project) >= need
	}
	for _, r := range p.roles {
		if r >= need {
			return true
		}
	}
	return false
}

// Identity is a signed-in user as the provider describes them.
type Identity struct {
	Subject, Email string
	Groups         []string
}

// Binding gives a role on a project ("*": every project) to one user
// (matched by subject, or by email ignoring case) or to a group of the
// provider's groups claim.
type Binding struct {
	Project string
	// Group says Subject is a group's name, not a user's subject or email.
	Group   bool
	Subject string
	Role    Role
}

// Resolve is the principal of id under bindings: on each project, the
// highest role bound to the user or to one of its groups. Admin on "*"
// makes the global admin.
func Resolve(id Identity, bindings []Binding) Principal {
	p := Principal{roles: map[string]Role{}}
	groups := make(map[string]bool, len(id.Groups))
	for _, g := range id.Groups {
		groups[g] = true
	}
	for _, b := range bindings {
		match := false
		if b.Group {
			match = groups[b.Subject]
		} else {
			match = b.Subject == id.Subject || id.Email != "" && strings.EqualFold(b.Subject, id.Email)
		}
		if match && b.Role > p.roles[b.Project] {
			p.roles[b.Project] = b.Role
		}
	}
	p.GlobalAdmin = p.roles[AllProjects] >= Admin
	return p
}

// Forbidden says what a refused a lacks, for the 403's message.
func Forbidden(a Action, project string) string {
	switch {
	case Global(a):
		return fmt.Sprintf("this needs the global admin role (an admin token, or %s on every project)", Admin)
	case project == "":
		return fmt.Sprintf("this needs the %s role on some project", Needs(a))
	default:
		return fmt.Sprintf("this needs the %s role on project %q", Needs(a), project)
	}
}

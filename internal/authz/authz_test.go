package authz

import "testing"

func TestResolveHighestRoleWins(t *testing.T) {
	bindings := []Binding{
		{Project: "web", Subject: "ann@example.com", Role: Viewer},
		{Project: "web", Group: true, Subject: "ops", Role: Maintainer},
		{Project: "*", Subject: "sub-ann", Role: Viewer},
		{Project: "api", Group: true, Subject: "devs", Role: Admin},
		{Project: "docs", Subject: "someone-else", Role: Admin},
	}
	p := Resolve(Identity{Subject: "sub-ann", Email: "Ann@Example.com", Groups: []string{"ops"}}, bindings)
	for project, want := range map[string]Role{"web": Maintainer, "api": Viewer, "docs": Viewer, "other": Viewer} {
		if got := p.Role(project); got != want {
			t.Errorf("role on %s: %s, want %s", project, got, want)
		}
	}
	if p.GlobalAdmin {
		t.Error("a viewer on * is a global admin")
	}
	none := Resolve(Identity{Subject: "x"}, bindings)
	if none.Role("web") != None || Allowed(none, ViewAgents, "") {
		t.Errorf("an unbound user has %s on web / sees agents", none.Role("web"))
	}
	root := Resolve(Identity{Subject: "root"}, []Binding{{Project: "*", Subject: "root", Role: Admin}})
	if !root.GlobalAdmin || !Allowed(root, ManageGlobal, "") {
		t.Error("admin on * is not the global admin")
	}
}

func TestAllowed(t *testing.T) {
	p := Resolve(Identity{Subject: "u"}, []Binding{{Project: "web", Subject: "u", Role: Maintainer}})
	cases := []struct {
		a       Action
		project string
		want    bool
	}{
		{ViewProject, "web", true}, {OperateBuilds, "web", true}, {ManageProject, "web", false},
		{ViewProject, "api", false}, {ViewAgents, "", true}, {ListProjects, "", true}, {ManageGlobal, "", false}, {Action("nope"), "web", false},
	}
	for _, c := range cases {
		if got := Allowed(p, c.a, c.project); got != c.want {
			t.Errorf("Allowed(maintainer of web, %s, %q) = %v, want %v", c.a, c.project, got, c.want)
		}
	}
	if !Allowed(AdminPrincipal(), ManageGlobal, "") || !Allowed(AdminPrincipal(), ManageProject, "any") {
		t.Error("the admin token is refused")
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range []Role{Viewer, Maintainer, Admin} {
		if got, err := ParseRole(r.String()); err != nil || got != r {
			t.Errorf("ParseRole(%s) = %v, %v", r, got, err)
		}
	}
	if _, err := ParseRole("owner"); err == nil {
		t.Error("ParseRole(owner): no error")
	}
}

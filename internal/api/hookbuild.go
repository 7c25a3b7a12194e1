package api

import (
	"fmt"

	"github.com/kilnci/kiln/internal/forge"
	"github.com/kilnci/kiln/internal/gitmirror"
	"github.com/kilnci/kiln/internal/store"
)

// hookOutcome is what a verified delivery asks of Kiln: a build to store
// (or none), what to record as its result, and a request whose
// unfinished builds end.
type hookOutcome struct {
	build  *store.Build
	result string
	// endPR, when positive, is a request that was closed or merged: its
	// unfinished builds are canceled with endReason.
	endPR     int
	endReason string
	// notOurs, when set, refuses the delivery with 404 and this message:
	// a request for a repository the project does not build.
	notOurs string
}

// hookBuild decides what a delivery for project p asks for, by the
// project's settings. It only decides: the handler stores and answers.
// The clone URL always comes from the project, never from the payload: a
// delivery may not point Kiln at another repository.
func hookBuild(p *store.Project, ev *forge.Event) hookOutcome {
	switch ev.Kind {
	case forge.KindPing:
		return hookOutcome{result: "ping"}
	case forge.KindPush:
		if ev.Push.Deleted {
			return hookOutcome{result: "ignored: ref deleted"}
		}
		event := store.EventPush
		if ev.Push.Tag != "" {
			event = store.EventTag
		}
		return hookOutcome{result: "build", build: &store.Build{ProjectID: p.ID, Trigger: "push", Event: event, Forge: ev.Forge, DeliveryID: ev.DeliveryID,
			Ref: ev.Push.Ref, Branch: ev.Push.Branch, Commit: ev.Push.Commit, Message: ev.Push.Message, Author: ev.Push.Author}}
	case forge.KindPullRequest:
		return pullRequestBuild(p, ev)
	}
	return hookOutcome{result: "ignored: event " + ev.Name}
}

// pullRequestBuild decides for a request event: a build of its head for
// an opened, updated, reopened or ready request (a draft's per the
// project; a fork's per the project: run, wait for approval, or off);
// the end of its builds when it is closed or merged; nothing otherwise.
func pullRequestBuild(p *store.Project, ev *forge.Event) hookOutcome {
	pr := ev.PullRequest
	// A request is into a repository: when the payload's and the
	// project's clone URLs can be compared (not a local path), they must
	// name the same one. The build still clones the project's URL.
	if same, comparable := gitmirror.SameRepository(p.CloneURL, pr.CloneURL); comparable && !same {
		return hookOutcome{notOurs: fmt.Sprintf("project %q builds %s, not %s (request #%d of %s)",
			p.Name, gitmirror.Redact(p.CloneURL), clipLog(pr.CloneURL, 200), pr.Number, clipLog(pr.BaseRepo, 200))}
	}
	switch {
	case pr.Action.Ends():
		return hookOutcome{result: fmt.Sprintf("request %s: its unfinished builds are canceled", pr.Action),
			endPR: pr.Number, endReason: fmt.Sprintf("request #%d %s", pr.Number, pr.Action)}
	case !pr.Action.Builds():
		return hookOutcome{result: "ignored: request " + clipLog(pr.ForgeAction, 64)}
	case pr.Draft && p.DraftPullRequests == store.DraftWait:
		return hookOutcome{result: "ignored: a draft request (the project builds drafts once they are ready)"}
	case pr.Fork && p.ForkPullRequests == store.ForkOff:
		return hookOutcome{result: "ignored: a request from a fork (the project builds none)"}
	}
	b := &store.Build{ProjectID: p.ID, Trigger: "pull_request", Event: store.EventPullRequest, ForgeAction: pr.ForgeAction, Forge: ev.Forge, DeliveryID: ev.DeliveryID,
		Ref: pr.Ref, Commit: pr.Commit, Message: pr.Title, Author: pr.Author,
		PullRequest: &store.PullRequest{Number: pr.Number, Title: pr.Title, HeadBranch: pr.HeadBranch, BaseBranch: pr.BaseBranch, Fork: pr.Fork}}
	result := "build"
	if pr.Fork && p.ForkPullRequests != store.ForkRun {
		b.Approval = store.ApprovalWaiting
		result = "build: a request from a fork, waiting for an admin's approval"
	}
	return hookOutcome{result: result, build: b}
}

package main

import (
	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
	"github.com/kilnci/kiln/internal/github/fakegithub/cmd/fake-runner/brokertap"
)

const (
	ghOwner = "bench-org"
	ghRepo  = "bench-repo"
	ghToken = "ghp_actionsbench"
)

var runnerLabels = []string{"self-hosted", "kiln", "bench"}

// gh is the fake GitHub on loopback, and the tap in front of its broker
// that notes when each runner's register call arrives.
type gh struct {
	fake   *fakegithub.Server
	tap    *brokertap.Tap
	client *github.Client
}

func startGitHub() (*gh, error) {
	g := &gh{fake: fakegithub.New()}
	g.fake.AddToken(ghToken)
	var err error
	if g.tap, err = brokertap.Start(g.fake); err != nil {
		g.fake.Close()
		return nil, err
	}
	if g.client, err = github.New(github.Config{BaseURL: g.fake.URL(), Token: ghToken}); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

func (g *gh) close() {
	g.tap.Close()
	g.fake.Close()
}

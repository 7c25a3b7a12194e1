// Package testenv tells tests which real services this machine offers, so
// that a test runs against the real thing or says plainly why it cannot.
package testenv

import (
	"os"
	"testing"
)

// BaseImage is the busybox image scripts/engines.sh builds and imports into
// every engine. Tests create their sandboxes from it; nothing is pulled.
const BaseImage = "localhost/kiln/busybox:latest"

// Engine is a container engine available to tests.
type Engine struct {
	Name string // "docker" or "podman"
	Host string // e.g. "unix:///run/kiln-docker.sock"
}

// Environment variables read by Engines.
const (
	EnvDockerHost     = "KILN_TEST_DOCKER_HOST"
	EnvPodmanHost     = "KILN_TEST_PODMAN_HOST"
	EnvRequireEngines = "KILN_REQUIRE_ENGINES"
)

// Engines returns the engines configured by KILN_TEST_DOCKER_HOST and
// KILN_TEST_PODMAN_HOST, Docker first. If neither is set the test is
// skipped with a message saying how to set them, unless
// KILN_REQUIRE_ENGINES=1: then it fails, so CI never silently skips.
func Engines(t testing.TB) []Engine {
	t.Helper()
	var engines []Engine
	if h := os.Getenv(EnvDockerHost); h != "" {
		engines = append(engines, Engine{Name: "docker", Host: h})
	}
	if h := os.Getenv(EnvPodmanHost); h != "" {
		engines = append(engines, Engine{Name: "podman", Host: h})
	}
	if len(engines) > 0 {
		return engines
	}
	const msg = "no container engine configured: run (as root) " +
		`eval "$(scripts/engines.sh --env)"` + " to start Docker and Podman and set " +
		EnvDockerHost + " and " + EnvPodmanHost
	if os.Getenv(EnvRequireEngines) == "1" {
		t.Fatal(msg + " (" + EnvRequireEngines + "=1)")
		return nil
	}
	t.Skip(msg)
	return nil
}

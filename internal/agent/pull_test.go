package agent

import (
	"testing"

	"github.com/kilnci/kiln/internal/protocol"
)

// The agent gives an image's pull only the credentials of its own
// registry, whatever the assignment holds.
func TestRegistryAuthMatchesTheImagesHost(t *testing.T) {
	asg := &protocol.Assignment{Registries: []protocol.RegistryCredentials{{Host: "registry.example.com", Username: "ci", Password: "p"}}}
	for img, want := range map[string]bool{
		"registry.example.com/team/ci:1":      true,
		"registry.example.com:5000/team/ci:1": false,
		"other.example.com/team/ci:1":         false,
		"busybox":                             false,
		"registry.example.com.evil.example/x": false,
	} {
		auth, _ := registryAuth(asg, img)
		if (auth != nil) != want {
			t.Errorf("%s: credentials %v, want %v", img, auth != nil, want)
		}
	}
}

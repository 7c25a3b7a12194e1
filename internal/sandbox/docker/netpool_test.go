package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/sandboxtest"
	"github.com/kilnci/kiln/internal/testenv"
)

// The whole conformance suite holds with pooled networks too: isolation,
// limits, Destroy and leftovers are the same.
func TestConformancePooledNetworks(t *testing.T) {
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			sandboxtest.Run(t, func(t *testing.T) sandbox.Runtime {
				r := newRuntime(t, e.Host)
				r.EnableNetworkPool("test-"+randomHex(t), 2, nil)
				t.Cleanup(func() { r.DrainNetworkPool(context.Background()) })
				return leftovers{r}
			})
		})
	}
}

// A pooled network serves one sandbox at a time and is reused after it.
func TestNetworkPoolReuse(t *testing.T) {
	for _, e := range testenv.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			ctx := t.Context()
			r := newRuntime(t, e.Host)
			owner := "test-" + randomHex(t)
			r.EnableNetworkPool(owner, 1, nil)
			t.Cleanup(func() { r.DrainNetworkPool(context.Background()) })
			spec := func(n string) sandbox.Spec {
				return sandbox.Spec{Name: "kiln-pool-" + owner + "-" + n, Image: testenv.BaseImage,
					Labels: map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: owner}}
			}
			netOf := func(id string) string {
				c, err := r.cli.ContainerInspect(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				for n := range c.NetworkSettings.Networks {
					return n
				}
				return ""
			}
			a, err := r.Create(ctx, spec("a"))
			if err != nil {
				t.Fatal(err)
			}
			b, err := r.Create(ctx, spec("b"))
			if err != nil {
				t.Fatal(err)
			}
			na, nb := netOf(a), netOf(b)
			if r.isPodman(ctx) {
				// Podman sandboxes use user-mode networking: no bridge to pool.
				for _, id := range []string{a, b} {
					c, err := r.cli.ContainerInspect(ctx, id)
					if err != nil {
						t.Fatal(err)
					}
					if mode := string(c.HostConfig.NetworkMode); mode != "slirp4netns" {
						t.Errorf("podman sandbox network mode %q, want slirp4netns", mode)
					}
					_ = r.Destroy(ctx, id)
				}
				list, _ := r.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelNetPool+"="+owner))})
				if len(list) != 0 {
					t.Errorf("podman: %d pool networks created", len(list))
				}
				return
			}
			if na == "" || na == nb {
				t.Fatalf("two live sandboxes share network %q", na)
			}
			if err := r.Destroy(ctx, a); err != nil {
				t.Fatal(err)
			}
			if err := r.Destroy(ctx, b); err != nil {
				t.Fatal(err)
			}
			// Pool size 1: one of the two networks is kept, the other removed.
			list, err := r.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelNetPool+"="+owner))})
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 {
				t.Fatalf("pool of 1 holds %d networks after both sandboxes left", len(list))
			}
			c, err := r.Create(ctx, spec("c"))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Destroy(context.Background(), c)
			if got := netOf(c); got != list[0].Name {
				t.Fatalf("new sandbox got network %q, want the idle pooled %q", got, list[0].Name)
			}
		})
	}
}

func randomHex(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

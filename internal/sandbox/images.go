package sandbox

import (
	"context"
	"time"
)

// LabelImage marks an image Kiln built ("true"): the image garbage
// collector may remove it. Images Kiln pulled cannot carry a label of
// Kiln's (labels live in the image's configuration, which the registry's
// digest pins), so the agent keeps those in a state file of its own. An
// image carrying LabelManaged ("true", the sandboxes' label) counts too.
const LabelImage = "kiln.managed"

// Image is one image on the engine's host.
type Image struct {
	ID string
	// Refs are the image's names (repository:tag) as the engine lists
	// them; none for a dangling image.
	Refs []string
	// Digests are its registry names (repository@sha256:…), as pulled.
	Digests []string
	Size    int64 // bytes on the host, layers shared with others included
	Created time.Time
	Labels  map[string]string
}

// Container is one container on the engine's host, any engine client's,
// Kiln's or not, as far as the image collector needs to know it.
type Container struct {
	ID      string
	Name    string
	ImageID string
	Running bool // running, paused or restarting: anything not stopped
	Created time.Time
	Labels  map[string]string
}

// Removal is what removing one image reference did.
type Removal struct {
	// Deleted: the image itself went (the reference was its last name, or
	// it had none); otherwise only the name was untagged and the image
	// stays under its other names.
	Deleted bool
	// Freed is the image's size when it was deleted (layers it shared
	// with images that stay are not freed on disk: an upper bound), else 0.
	Freed int64
}

// Images is a Runtime that can list and remove images and say how full
// the engine's data disk is: what the agent's image collector needs.
// Implementations are safe for concurrent use.
type Images interface {
	// Images lists every image on the host.
	Images(ctx context.Context) ([]Image, error)
	// Containers lists every container on the host, stopped ones too.
	Containers(ctx context.Context) ([]Container, error)
	// RemoveImage removes ref (a name, or an image id for a dangling
	// image), never forced: an image a container uses is refused by the
	// engine, and a name of an image with other names is only untagged.
	// A ref already gone is not an error (zero Removal).
	RemoveImage(ctx context.Context, ref string) (Removal, error)
	// DataDiskUsage is the used and total bytes of the filesystem holding
	// the engine's images and containers.
	DataDiskUsage(ctx context.Context) (used, total uint64, err error)
}

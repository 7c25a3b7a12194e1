package pipeline

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// Limits on resources a file may ask for. The lower bounds stop a typo
// (memory: 512 meaning bytes) from producing a sandbox that cannot start.
const (
	maxCPUs   = 64
	minMemory = 4 << 20
	maxMemory = 1 << 40
	minPids   = 16
	// maxPids is Linux's PID_MAX_LIMIT on 64-bit.
	maxPids = 1 << 22
	// minDisk is the smallest quota disk an agent makes.
	minDisk = 1 << 20
	maxDisk = 1 << 40
)

func (c *checker) timeout(n *yaml.Node, field string) time.Duration {
	s, ok := c.text(n, field, "a duration")
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	switch {
	case err != nil:
		c.errorf(n, field, "invalid duration %q: use a number with a unit, like 90s, 30m or 1h30m", s)
	case d <= 0:
		c.errorf(n, field, "must be greater than 0")
	case d > MaxJobTimeout:
		c.errorf(n, field, "must be at most %s", formatDuration(MaxJobTimeout))
	default:
		return d
	}
	return 0
}

// formatDuration drops the zero minutes and seconds Duration.String keeps:
// "24h", not "24h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	return strings.TrimSuffix(s, "0m")
}

func (c *checker) resources(n *yaml.Node, field string) (Resources, map[string]location) {
	var r Resources
	m := c.mapping(n, field)
	if m == nil {
		return r, nil
	}
	at := map[string]location{}
	for _, e := range entries(m) {
		f := field + "." + e.key.Value
		at[e.key.Value] = location{e.value.Line, e.value.Column, f}
		switch e.key.Value {
		case "cpus":
			r.CPUs = c.cpus(e.value, f)
		case "memory":
			r.MemoryBytes = c.memory(e.value, f)
		case "pids":
			r.Pids = c.pids(e.value, f)
		case "disk":
			r.DiskBytes = c.size(e.value, f, minDisk, maxDisk)
		default:
			c.unknownKey(e.key, field, resourcesKeys)
		}
	}
	return r, at
}

func (c *checker) cpus(n *yaml.Node, field string) float64 {
	s, ok := c.text(n, field, "a number")
	if !ok {
		return 0
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	switch {
	case err != nil || math.IsNaN(v) || math.IsInf(v, 0):
		c.errorf(n, field, "invalid number %q: use a number of CPUs like 2 or 0.5", s)
	case v <= 0 || v > maxCPUs:
		c.errorf(n, field, "must be greater than 0 and at most %d", maxCPUs)
	default:
		return v
	}
	return 0
}

func (c *checker) memory(n *yaml.Node, field string) int64 {
	return c.size(n, field, minMemory, maxMemory)
}

func (c *checker) size(n *yaml.Node, field string, minSize, maxSize float64) int64 {
	s, ok := c.text(n, field, "a size")
	if !ok {
		return 0
	}
	v, ok := parseSize(s)
	switch {
	case !ok:
		c.errorf(n, field, "invalid size %q: use bytes, or a number with a unit k, m, g or t, like 512m or 2g", s)
	case v < minSize:
		c.errorf(n, field, "must be at least %s (%d bytes)", formatSize(int64(minSize)), int64(minSize))
	case v > maxSize:
		c.errorf(n, field, "must be at most %s (%d bytes)", formatSize(int64(maxSize)), int64(maxSize))
	default:
		return int64(v)
	}
	return 0
}

func (c *checker) pids(n *yaml.Node, field string) int64 {
	s, ok := c.text(n, field, "a number")
	if !ok {
		return 0
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	switch {
	case err != nil && !isRangeError(err):
		c.errorf(n, field, "invalid number %q: use a whole number like 1024", s)
	case err != nil || v < minPids || v > maxPids:
		c.errorf(n, field, "must be at least %d and at most %d", minPids, maxPids)
	default:
		return v
	}
	return 0
}

func isRangeError(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

var sizePattern = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$`)

// sizeUnits are binary, as Docker's are: 1k is 1024 bytes, 1g 2^30.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "ti": 1 << 40, "tib": 1 << 40,
}

// parseSize parses "1073741824", "512m", "1.5g", "2GiB" into bytes, rounded
// down. The result is a float so that a huge number is compared with the
// limits rather than overflowing.
func parseSize(s string) (float64, bool) {
	m := sizePattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, false
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil && !isRangeError(err) {
		return 0, false
	}
	return math.Floor(v * unit), true
}

// formatSize renders bytes the way a file may write them: 4194304 → "4m".
func formatSize(b int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if b >= u.size && b%u.size == 0 {
			return fmt.Sprintf("%d%s", b/u.size, u.suffix)
		}
	}
	return strconv.FormatInt(b, 10)
}

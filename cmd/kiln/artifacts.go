package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/artifact"
	"github.com/kilnci/kiln/internal/termtext"
)

const artifactsUsage = "usage: kiln artifacts BUILD_ID | kiln artifacts get BUILD_ID JOB [-o FILE | -x DIR]"

// runArtifacts lists a build's artifacts, or downloads one job's.
func runArtifacts(ctx context.Context, args []string) error {
	get := len(args) > 0 && args[0] == "get"
	if get {
		args = args[1:]
	}
	fs := flag.NewFlagSet("kiln artifacts", flag.ContinueOnError)
	connect := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON (the list)")
	out := fs.String("o", "", "get: write the archive (tar + zstd) to this `file` (default: build-ID-JOB.tar.zst here; - for stdout)")
	into := fs.String("x", "", "get: unpack the archive into this `directory` instead (made if missing)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if !get {
		id, err := buildIDArg(pos, artifactsUsage[len("usage: "):])
		if err != nil {
			return err
		}
		c, err := connect()
		if err != nil {
			return err
		}
		var list []api.ArtifactView
		if err := c.do(ctx, "GET", fmt.Sprintf("/builds/%d/artifacts", id), nil, &list); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(list)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "JOB\tATTEMPT\tFILES\tSIZE\tEXPIRES\tSHA256")
		for _, a := range list {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", termtext.Quote(a.Job), a.Attempt, a.Files, humanBytes(a.Size), a.ExpiresAt.Local().Format("2006-01-02 15:04"), a.SHA256)
		}
		return tw.Flush()
	}
	if len(pos) != 2 || *out != "" && *into != "" {
		return errors.New(artifactsUsage)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("invalid build id %q", pos[0])
	}
	job := pos[1]
	c, err := connect()
	if err != nil {
		return err
	}
	d, err := c.api().Artifact(ctx, id, job)
	if err != nil {
		return err
	}
	defer d.Close()
	// Into a file first, checked against the server's digest, and only
	// then unpacked or given its name: a cut or altered download leaves
	// nothing that looks whole.
	dst := *out
	if dst == "" && *into == "" {
		dst = fmt.Sprintf("build-%d-%s.tar.zst", id, job)
	}
	if dst == "-" {
		return copyChecked(os.Stdout, d.ReadCloser, d.SHA256)
	}
	dir := "."
	if dst != "" {
		dir = filepath.Dir(dst)
	}
	tmp, err := os.CreateTemp(dir, ".kiln-artifacts-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = copyChecked(tmp, d.ReadCloser, d.SHA256)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if *into == "" {
		if err := os.Rename(tmp.Name(), dst); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", dst)
		return nil
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return err
	}
	defer f.Close()
	files, n, err := artifact.Extract(f, *into)
	if err != nil {
		return fmt.Errorf("unpack into %s: %w", *into, err)
	}
	fmt.Fprintf(os.Stderr, "unpacked %d files (%s) into %s\n", files, humanBytes(n), *into)
	return nil
}

// copyChecked copies r to w and fails when what it read does not have the
// digest want (hex; "": not checked).
func copyChecked(w io.Writer, r io.Reader, want string) error {
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, h), r); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); want != "" && got != want {
		return fmt.Errorf("download: the archive's sha256 is %s, the server recorded %s: refused", got, want)
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"testing"
)

// Every command's flag set parses -h: a flag defined twice (kiln up
// combines the server's and the agent's flags) panics here rather than on
// a user's machine.
func TestEveryCommandParsesHelp(t *testing.T) {
	stderr := os.Stderr
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	os.Stderr = devnull // usage text
	defer func() { os.Stderr = stderr }()
	for _, c := range commands {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("kiln %s -h: panic: %v", c.name, r)
				}
			}()
			err := c.run(context.Background(), []string{"-h"})
			if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.Is(err, io.EOF) {
				t.Logf("kiln %s -h: %v", c.name, err)
			}
		}()
	}
}

package main

import (
	"os"
	"path/filepath"
)

// defaultDataDir is $KILN_HOME, else ~/.kiln.
func defaultDataDir() string {
	if d := os.Getenv("KILN_HOME"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".kiln"
	}
	return filepath.Join(home, ".kiln")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

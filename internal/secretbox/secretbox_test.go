package secretbox

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestSealOpen(t *testing.T) {
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	box, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := box.Seal([]byte("hunter22"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter22")) {
		t.Fatal("plaintext visible in ciphertext")
	}
	got, err := box.Open(sealed)
	if err != nil || string(got) != "hunter22" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := box.Open(sealed); err == nil {
		t.Fatal("tampered value opened")
	}
	other, _ := New(bytes.Repeat([]byte{7}, 32))
	good, _ := box.Seal([]byte("x"))
	if _, err := other.Open(good); err == nil {
		t.Fatal("opened with the wrong key")
	}
}

func TestLoadOrCreateKeyIsStable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	a, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateKey(p)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("key changed between loads: %v", err)
	}
	if _, err := ParseKey("zz"); err == nil {
		t.Fatal("bad key accepted")
	}
}

package logs

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// maskRef is the one-shot replacement the Masker must match: left to right,
// at each position the longest secret (of at least MinSecretLen bytes) that
// starts there is replaced by "***".
func maskRef(in []byte, secrets []string) []byte {
	secrets = expandSecrets(secrets)
	var out []byte
	for i := 0; i < len(in); {
		best := 0
		for _, s := range secrets {
			if len(s) >= MinSecretLen && len(s) > best && bytes.HasPrefix(in[i:], []byte(s)) {
				best = len(s)
			}
		}
		if best > 0 {
			out = append(out, "***"...)
			i += best
			continue
		}
		out = append(out, in[i])
		i++
	}
	return out
}

// maskChunks writes chunks to a new Masker, flushes it and returns the output.
func maskChunks(t *testing.T, secrets []string, chunks ...string) string {
	t.Helper()
	var out bytes.Buffer
	m := NewMasker(&out, secrets)
	for _, c := range chunks {
		if n, err := m.Write([]byte(c)); n != len(c) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

var maskerCases = []struct {
	name    string
	secrets []string
	in      string
	want    string
}{
	{"none", []string{"hunter22"}, "nothing to see here\n", "nothing to see here\n"},
	{"one", []string{"hunter22"}, "pw=hunter22\n", "pw=***\n"},
	{"twice", []string{"hunter22"}, "hunter22hunter22 hunter22", "****** ***"},
	{"at start and end", []string{"s3cr3t"}, "s3cr3t in the middle s3cr3t", "*** in the middle ***"},
	{"near miss", []string{"hunter22"}, "hunter2 hunter2", "hunter2 hunter2"},
	{"multi-line secret", []string{"-----BEGIN KEY-----\nabc\n-----END KEY-----"}, "k:\n-----BEGIN KEY-----\nabc\n-----END KEY-----\n", "k:\n***\n"},
	{"short ignored", []string{"a", "ab", "abc", ""}, "abcabc", "abcabc"},
	{"short ignored, long kept", []string{"abc", "abcd"}, "abcabcd", "abc***"},
	{"overlap: earliest wins", []string{"abcd", "bcdefg"}, "abcdefg", "***efg"},
	{"overlap: longest at same start wins", []string{"abcd", "abcdef"}, "abcdefg", "***g"},
	{"overlap: longest listed first", []string{"abcdef", "abcd"}, "xabcdx", "x***x"},
	{"self-overlap", []string{"aaaa"}, "aaaaaaaaa", "******a"},
	{"periodic", []string{"abab"}, "abababab", "******"},
	{"chain", []string{"1234", "2345"}, "12345", "***5"},
	{"later longer match", []string{"xabc", "abcdefgh"}, "xabcdefgh", "***defgh"},
	{"prefix then other", []string{"abcdef", "cdxy"}, "abcdxy", "ab***"},
	{"false start", []string{"aab0"}, "aaab0", "a***"},
}

func TestMaskerOneWrite(t *testing.T) {
	for _, tc := range maskerCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := maskChunks(t, tc.secrets, tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if ref := string(maskRef([]byte(tc.in), tc.secrets)); ref != tc.want {
				t.Errorf("reference gives %q, want %q", ref, tc.want)
			}
		})
	}
}

func TestMaskerSplitInTwo(t *testing.T) {
	for _, tc := range maskerCases {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i <= len(tc.in); i++ {
				if got := maskChunks(t, tc.secrets, tc.in[:i], tc.in[i:]); got != tc.want {
					t.Errorf("split at %d: got %q, want %q", i, got, tc.want)
				}
			}
		})
	}
}

func TestMaskerSplitInThree(t *testing.T) {
	for _, tc := range maskerCases {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i <= len(tc.in); i++ {
				for j := i; j <= len(tc.in); j++ {
					if got := maskChunks(t, tc.secrets, tc.in[:i], tc.in[i:j], tc.in[j:]); got != tc.want {
						t.Errorf("split at %d, %d: got %q, want %q", i, j, got, tc.want)
					}
				}
			}
		})
	}
}

func TestMaskerByteByByte(t *testing.T) {
	for _, tc := range maskerCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := maskChunks(t, tc.secrets, strings.Split(tc.in, "")...); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// recorder records what reaches the underlying writer, write by write.
type recorder struct{ writes []string }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) String() string { return strings.Join(r.writes, "") }

func TestMaskerNotDelayed(t *testing.T) {
	var rec recorder
	m := NewMasker(&rec, []string{"hunter22", "correct horse"})
	steps := []struct{ write, seen string }{
		{"plain line\n", "plain line\n"},                // no secret: through at once
		{"no newline", "plain line\nno newline"},        // a partial line too
		{" and hun", "plain line\nno newline and "},     // "hun" may start a secret: held
		{"ter22", "plain line\nno newline and ***"},     // it did
		{" hunt", "plain line\nno newline and *** "},    // held again
		{"ed", "plain line\nno newline and *** hunted"}, // it did not: released
		{" correct horse", "plain line\nno newline and *** hunted ***"},
		{" hunter2", "plain line\nno newline and *** hunted *** "}, // the end of the step...
	}
	for i, s := range steps {
		if _, err := m.Write([]byte(s.write)); err != nil {
			t.Fatal(err)
		}
		if got := rec.String(); got != s.seen {
			t.Fatalf("after write %d (%q): underlying writer has %q, want %q", i, s.write, got, s.seen)
		}
	}
	if err := m.Flush(); err != nil { // ...flushes the held tail as it is
		t.Fatal(err)
	}
	if got, want := rec.String(), "plain line\nno newline and *** hunted *** hunter2"; got != want {
		t.Errorf("after Flush: %q, want %q", got, want)
	}
	if err := m.Flush(); err != nil || rec.String() != "plain line\nno newline and *** hunted *** hunter2" {
		t.Errorf("second Flush: %v, output %q", err, rec.String())
	}
}

func TestMaskerSecretAtEndFlushed(t *testing.T) {
	secrets := []string{"abcd", "abcdef"}
	var rec recorder
	m := NewMasker(&rec, secrets)
	if _, err := m.Write([]byte("key abcd")); err != nil {
		t.Fatal(err)
	}
	// "abcd" is a secret, but so may be "abcdef": undecided until Flush.
	if got := rec.String(); got != "key " {
		t.Fatalf("before Flush: %q", got)
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := rec.String(); got != "key ***" {
		t.Fatalf("after Flush: %q", got)
	}
	// The Masker goes on after a Flush (the next step).
	if _, err := m.Write([]byte("ef abcdef")); err != nil {
		t.Fatal(err)
	}
	if got := rec.String(); got != "key ***ef ***" {
		t.Fatalf("after next write: %q", got)
	}
}

func TestMaskerNoSecrets(t *testing.T) {
	var rec recorder
	m := NewMasker(&rec, nil)
	for _, w := range []string{"a", "bc\n", "", "def"} {
		if n, err := m.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := strings.Join(rec.writes, "|"); got != "a|bc\n|def" {
		t.Errorf("writes %q", got)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestMaskerWriteErrorSticks(t *testing.T) {
	boom := errors.New("boom")
	m := NewMasker(failWriter{boom}, []string{"secret"})
	if _, err := m.Write([]byte("x")); !errors.Is(err, boom) {
		t.Fatalf("Write: %v", err)
	}
	if _, err := m.Write([]byte("sec")); !errors.Is(err, boom) {
		t.Fatalf("second Write: %v", err)
	}
	if err := m.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush: %v", err)
	}
}

// FuzzMasker checks the streaming Masker against the one-shot replacement,
// for random input, secrets (separated by "|"; one more is taken from the
// input itself so that matches are common) and write boundaries (each byte
// of cuts is the length, mod 16, of the next write).
func FuzzMasker(f *testing.F) {
	f.Add([]byte("the password is hunter22, again hunter22\n"), "hunter22|pass", []byte{3, 7, 1, 0, 5})
	f.Add([]byte("aaaaaaaaaaab"), "aaaa|aaab", []byte{1, 1, 1, 1, 1, 1, 1, 1})
	f.Add([]byte("abababababab"), "abab|baba|ababab", []byte{2, 3, 5})
	f.Add([]byte("xabcdefgh xabc abcdefg"), "xabc|abcdefgh", []byte{4, 4, 2, 9})
	f.Add([]byte("token=ghp_0123456789abcdef end"), "ghp_0123456789abcdef", []byte{10, 3, 0, 0, 15})
	f.Fuzz(func(t *testing.T, input []byte, secretList string, cuts []byte) {
		secrets := strings.Split(secretList, "|")
		if len(cuts) >= 2 && len(input) > 0 {
			off := int(cuts[0]) % len(input)
			end := min(off+int(cuts[1])%12, len(input))
			secrets = append(secrets, string(input[off:end]))
		}
		var out bytes.Buffer
		m := NewMasker(&out, secrets)
		rest := input
		for _, c := range cuts {
			n := min(int(c)%16, len(rest))
			if _, err := m.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
			if m.maxLen > 0 && len(m.held) >= m.maxLen {
				t.Fatalf("holds back %d bytes, longest secret is %d", len(m.held), m.maxLen)
			}
		}
		if _, err := m.Write(rest); err != nil {
			t.Fatal(err)
		}
		if err := m.Flush(); err != nil {
			t.Fatal(err)
		}
		if want := maskRef(input, secrets); !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("secrets %q, input %q:\ngot  %q\nwant %q", secrets, input, out.Bytes(), want)
		}
		// "***" next to leftover bytes can spell a secret that itself
		// contains '*'; any other secret must be gone.
		for _, s := range secrets {
			if len(s) >= MinSecretLen && !strings.Contains(s, "*") && bytes.Contains(out.Bytes(), []byte(s)) {
				t.Fatalf("output %q still contains secret %q", out.Bytes(), s)
			}
		}
	})
}

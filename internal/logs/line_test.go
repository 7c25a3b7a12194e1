package logs

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

// splitLines writes chunks to a new LineWriter, flushes it and returns the
// lines emitted.
func splitLines(chunks ...string) []string {
	var lines []string
	lw := NewLineWriter(func(text string) { lines = append(lines, text) })
	for _, c := range chunks {
		lw.Write([]byte(c))
	}
	lw.Flush()
	return lines
}

func TestLineWriter(t *testing.T) {
	long := strings.Repeat("x", MaxLineBytes)
	// A 3-byte character (€) straddling the cut: MaxLineBytes-1 bytes, then €.
	straddle := strings.Repeat("y", MaxLineBytes-1) + "€" + "z"
	cases := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"one", "hello\n", []string{"hello"}},
		{"partial flushed", "a\nb", []string{"a", "b"}},
		{"empty lines", "\n\n", []string{"", ""}},
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}},
		{"only the last cr dropped", "a\r\r\n", []string{"a\r"}},
		{"lone cr kept", "a\rb\n", []string{"a\rb"}},
		{"cr at flush", "a\r", []string{"a"}},
		{"exactly max", long + "\n", []string{long}},
		{"exactly max crlf", long + "\r\n", []string{long}},
		{"exactly max partial", long, []string{long}},
		{"max plus one", long + "a\n", []string{long, "a"}},
		{"max plus cr in middle", long + "\rb\n", []string{long, "\rb"}},
		{"three pieces", long + long + "tail\n" + "next\n", []string{long, long, "tail", "next"}},
		{"twice max", long + long + "\n", []string{long, long}},
		{"utf-8 kept whole", straddle + "\n", []string{strings.Repeat("y", MaxLineBytes-1), "€z"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how string, got []string) {
				t.Helper()
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: got %s, want %s", how, summary(got), summary(tc.want))
				}
			}
			check("one write", splitLines(tc.in))
			check("reference", refLines(tc.in))
			if len(tc.in) < 64 {
				for i := 0; i <= len(tc.in); i++ {
					for j := i; j <= len(tc.in); j++ {
						check("three writes", splitLines(tc.in[:i], tc.in[i:j], tc.in[j:]))
					}
				}
				check("byte by byte", splitLines(strings.Split(tc.in, "")...))
				return
			}
			// Long input: cuts around the interesting places, and random ones.
			for _, i := range []int{1, MaxLineBytes - 2, MaxLineBytes - 1, MaxLineBytes, MaxLineBytes + 1, MaxLineBytes + 2, len(tc.in) - 1} {
				if i > 0 && i < len(tc.in) {
					check("two writes", splitLines(tc.in[:i], tc.in[i:]))
				}
			}
			rng := rand.New(rand.NewSource(1))
			for range 20 {
				check("random writes", splitLines(randomChunks(rng, tc.in, 4096)...))
			}
		})
	}
}

func TestLineWriterRandomSplits(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	alphabet := []string{"a", "b", "\r", "\n", "€", "\r\n", "\xff", "\x80"}
	for range 200 {
		var sb strings.Builder
		for range rng.Intn(300) {
			sb.WriteString(alphabet[rng.Intn(len(alphabet))])
			if rng.Intn(50) == 0 {
				sb.WriteString(strings.Repeat("L", MaxLineBytes-2+rng.Intn(4)))
			}
		}
		in := sb.String()
		want := refLines(in)
		if got := splitLines(in); !slices.Equal(got, want) {
			t.Fatalf("input of %d bytes: one write gives %s, want %s", len(in), summary(got), summary(want))
		}
		for range 5 {
			if got := splitLines(randomChunks(rng, in, 1+rng.Intn(MaxLineBytes))...); !slices.Equal(got, want) {
				t.Fatalf("input of %d bytes: split writes give %s, want %s", len(in), summary(got), summary(want))
			}
		}
	}
}

// randomChunks cuts s into pieces of 0 to maxLen bytes.
func randomChunks(rng *rand.Rand, s string, maxLen int) []string {
	var out []string
	for len(s) > 0 {
		n := min(rng.Intn(maxLen+1), len(s))
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

// refLines is the one-shot split the LineWriter must match, whatever the
// write boundaries.
func refLines(in string) []string {
	var out []string
	lines := strings.Split(in, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // input ends with a newline, or is empty
	}
	for _, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		for len(l) > MaxLineBytes {
			n := MaxLineBytes
			for k := 0; k < 3 && l[n]&0xC0 == 0x80; k++ {
				n--
			}
			if l[n]&0xC0 == 0x80 {
				n = MaxLineBytes
			}
			out = append(out, l[:n])
			l = l[n:]
		}
		out = append(out, l)
	}
	return out
}

// summary shows lines briefly: long ones by their length and end.
func summary(lines []string) string {
	var parts []string
	for _, l := range lines {
		if len(l) > 20 {
			parts = append(parts, fmt.Sprintf("(%d bytes ending %q)", len(l), l[len(l)-5:]))
		} else {
			parts = append(parts, fmt.Sprintf("%q", l))
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

package logs

import (
	"strings"
	"testing"
)

// The printf of the hardening issue: a secret split around stderr output
// is masked, and stderr's line does not land inside stdout's.
func TestStreamsKeepStdoutAndStderrApart(t *testing.T) {
	var lines []string
	emit := func(s string) { lines = append(lines, s) }
	secrets := []string{"hunter2-supersecret"}
	stdout, stderr := NewStream(secrets, emit), NewStream(secrets, emit)
	stdout.Write([]byte("E: hunter2-"))
	stderr.Write([]byte("progress\n"))
	stdout.Write([]byte("supersecret\n"))
	stdout.Flush()
	stderr.Flush()
	if got := strings.Join(lines, "|"); got != "progress|E: ***" {
		t.Fatalf("lines %q", lines)
	}
}

// Each line of a multi-line secret is masked on its own, as well as the
// whole.
func TestMaskerMultiLineSecret(t *testing.T) {
	key := "-----BEGIN KEY-----\r\nAAAABBBBCCCC\n-----END KEY-----"
	got := maskChunks(t, []string{key}, "whole: "+key+"\nalone: AAAABBBBCCCC\nindented:   -----END KEY-----  \n")
	if want := "whole: ***\nalone: ***\nindented:   ***  \n"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// FuzzLogStreams drives two streams (stdout and stderr: a masker and a
// line splitter each) with interleaved writes, as an exec does. Properties:
// no secret (without '*', which "***" could spell) appears in any line; each
// stream's lines are exactly the line split of its masked input, whatever
// the interleaving: nothing is lost or mixed but what is masked.
func FuzzLogStreams(f *testing.F) {
	f.Add([]byte("E: hunter2-supersecret\n"), []byte("progress\n"), "hunter2-supersecret", []byte{11, 9, 12})
	f.Add([]byte("a\nb\r\nc"), []byte("x\ny"), "abcd", []byte{1, 1, 1, 1, 1, 1})
	f.Add([]byte("key=-----BEGIN-----\nAAAA\n-----END-----\n"), []byte("AAAA\n"), "-----BEGIN-----\nAAAA\n-----END-----", []byte{3, 200, 7, 1})
	f.Add([]byte("tok tok tok"), []byte("ok tok"), "tok |ok t", []byte{2, 130, 5})
	f.Fuzz(func(t *testing.T, out, errb []byte, secretList string, cuts []byte) {
		secrets := strings.Split(secretList, "|")
		var got [2][]string
		streams := [2]*Stream{
			NewStream(secrets, func(s string) { got[0] = append(got[0], s) }),
			NewStream(secrets, func(s string) { got[1] = append(got[1], s) }),
		}
		rest := [2][]byte{out, errb}
		// Each cut: its high bit picks the stream, the rest the length.
		for _, c := range cuts {
			i := int(c >> 7)
			n := min(int(c&0x7f)%24, len(rest[i]))
			streams[i].Write(rest[i][:n])
			rest[i] = rest[i][n:]
		}
		for i := range streams {
			streams[i].Write(rest[i])
			streams[i].Flush()
		}
		for i, in := range [2][]byte{out, errb} {
			want := splitLines(string(maskRef(in, secrets)))
			if strings.Join(got[i], "\n") != strings.Join(want, "\n") || len(got[i]) != len(want) {
				t.Fatalf("stream %d, input %q, secrets %q:\ngot  %q\nwant %q", i, in, secrets, got[i], want)
			}
			for _, l := range got[i] {
				for _, s := range expandSecrets(secrets) {
					if len(s) >= MinSecretLen && !strings.Contains(s, "*") && strings.Contains(l, s) {
						t.Fatalf("line %q holds secret %q", l, s)
					}
				}
			}
		}
	})
}

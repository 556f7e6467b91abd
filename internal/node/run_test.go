package node_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/node"
)

func TestRun(t *testing.T) {
	padded := `{"type":"init","msg_id":7}`
	padded += strings.Repeat(" ", node.MaxLineBytes-len(padded))
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "seed lines",
			in: `{"src":"c1","dest":"n1","body":{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n1"]}}
{"src":"c1","dest":"n1","body":{"type":"route","msg_id":1},"traffic_split":{"v1":80,"v2":20}}
`,
			want: []string{
				`{"src":"n1","dest":"c1","body":{"type":"init_ok","in_reply_to":1}}`,
				`{"src":"n1","dest":"c1","body":{"type":"routed","in_reply_to":1,"version":"v1","reason":"weighted_routing","service":"api"}}`,
			},
		},
		{
			name: "blank lines get no reply, CRLF and a last line without newline are read",
			in:   "\n  \r\n{\"type\":\"init\",\"msg_id\":1}\r\n\n{\"type\":\"init\",\"msg_id\":2}",
			want: []string{`{"type":"init_ok","in_reply_to":1}`, `{"type":"init_ok","in_reply_to":2}`},
		},
		{
			name: "non-JSON line then the node carries on",
			in:   "not json\n{\"type\":\"init\",\"msg_id\":2}\n",
			want: []string{
				`{"type":"error","code":12,"text":"message: not JSON: invalid character 'o' in literal null (expecting 'u')"}`,
				`{"type":"init_ok","in_reply_to":2}`,
			},
		},
		{
			name: "line of exactly the limit",
			in:   padded + "\n",
			want: []string{`{"type":"init_ok","in_reply_to":7}`},
		},
		{
			name: "over-long line then the node carries on",
			in:   padded + " \n{\"type\":\"init\",\"msg_id\":2}\n",
			want: []string{
				`{"type":"error","code":12,"text":"message: line longer than 1048576 bytes"}`,
				`{"type":"init_ok","in_reply_to":2}`,
			},
		},
		{
			name: "over-long last line without newline",
			in:   strings.Repeat("x", 3*node.MaxLineBytes),
			want: []string{`{"type":"error","code":12,"text":"message: line longer than 1048576 bytes"}`},
		},
		{
			name: "empty input",
			in:   "",
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, nil)
			var out strings.Builder
			if err := n.Run(t.Context(), strings.NewReader(tc.in), &out); err != nil {
				t.Fatalf("Run: %v", err)
			}
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if out.Len() == 0 {
				got = nil
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") || len(got) != len(tc.want) {
				t.Errorf("replies\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestRunRepliesBeforeNextLine checks that each reply is flushed before
// the next message is read: the client only writes line 2 after it has
// read reply 1, so a buffered reply would block the test.
func TestRunRepliesBeforeNextLine(t *testing.T) {
	n := newNode(t, nil)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- n.Run(t.Context(), inR, outW)
		outW.Close()
	}()
	replies := bufio.NewReader(outR)
	for i, want := range []string{
		`{"type":"init_ok","in_reply_to":1}`,
		`{"type":"routed","in_reply_to":2,"version":"v1","reason":"weighted_routing","service":"api"}`,
		`{"type":"routed","in_reply_to":3,"version":"v1","reason":"weighted_routing","service":"api"}`,
	} {
		msgs := []string{`{"type":"init","msg_id":1}`, `{"type":"route","msg_id":2}`, `{"type":"route","msg_id":3}`}
		if _, err := io.WriteString(inW, msgs[i]+"\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		got, err := replies.ReadString('\n')
		if err != nil {
			t.Fatalf("read reply %d: %v", i, err)
		}
		if got != want+"\n" {
			t.Errorf("reply %d = %q, want %q", i, got, want)
		}
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Errorf("Run after EOF: %v", err)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	n := newNode(t, nil)
	inR, inW := io.Pipe()
	defer inW.Close() // lets the blocked reader finish (checked by goleak)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, inR, io.Discard) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestRunReturnsWriteErrors(t *testing.T) {
	n := newNode(t, nil)
	err := n.Run(t.Context(), strings.NewReader("{\"type\":\"init\"}\n{\"type\":\"init\"}\n"), failingWriter{})
	if err == nil || !strings.Contains(err.Error(), "broken pipe") {
		t.Errorf("Run = %v, want the write error", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestRunReturnsReadErrors(t *testing.T) {
	n := newNode(t, nil)
	err := n.Run(t.Context(), failingReader{}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Run = %v, want the read error", err)
	}
}

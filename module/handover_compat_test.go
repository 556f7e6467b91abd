package module

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
)

// The handover's messages carry a protocol version: a reply is written in
// the highest version both sides speak, fields a newer module adds are
// ignored, and a reply in a version this module does not speak is refused
// before it takes anything over.
func TestHandoverProtocolVersion(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the handover socket is Linux's")
	}
	for asked, want := range map[int]int{0: 1, 1: 1, 2: 1, 99: 1} {
		if got := negotiate(asked); got != want {
			t.Errorf("negotiate(%d) = %d, want %d", asked, got, want)
		}
	}

	// A leader of this build, asked for its state by a newer follower
	// (protocol 7, a field it does not know), answers in protocol 1.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start(t, testConfig, fmt.Sprintf(`, "admin_addr": %q`, addr))
	c, err := dialHandover(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(`{"op":"state","pid":1,"protocol":7,"wants":["compressed"]}` + "\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(line), `"protocol":1`) || !strings.Contains(string(line), `"state":{`) {
		t.Fatalf("the state answer to a newer follower: %s", line)
	}

	// Holders that answer a handover in another way.
	for _, tc := range []struct {
		name, reply, err string
	}{
		{name: "a newer holder's fields", reply: `{"pid":1,"protocol":1,"state":{"overrides":{}},"lease":"x"}`},
		{name: "a version this module does not speak", reply: `{"pid":1,"protocol":2,"state":{}}`, err: "handover protocol 2"},
		{name: "a refusal", reply: `{"pid":1,"protocol":1,"error":"this module does not run the control plane"}`, err: "does not run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hl, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := hl.Addr().String()
			hl.Close()
			ln, err := listenHandover(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			asked := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadBytes('\n')
				asked <- string(line)
				_, _ = c.Write([]byte(tc.reply + "\n"))
			}()
			tk, err := requestHandover(addr)
			if tk != nil {
				tk.abort()
			}
			if req := <-asked; !strings.Contains(req, fmt.Sprintf(`"protocol":%d`, handoverProtocol)) {
				t.Fatalf("the request does not carry the protocol: %s", req)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("err %v, want one containing %q", err, tc.err)
			}
		})
	}
}

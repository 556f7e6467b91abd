package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// MaxLineBytes is the longest message line Run reads; a longer line gets an
// error reply and is skipped.
const MaxLineBytes = 1 << 20

// line is one input line, or the end of input (done, with the read error).
type line struct {
	data    []byte
	tooLong bool
	done    bool
	err     error
}

// Run reads messages from r, one per line, and writes one reply line per
// message to w, flushed at once. Blank lines are skipped without a reply.
// It returns nil at the end of r, ctx.Err() when ctx ends (a read that is
// blocked at that moment finishes in the background once r returns), or
// the first write error.
func (n *Node) Run(ctx context.Context, r io.Reader, w io.Writer) error {
	lines := make(chan line)
	stop := make(chan struct{})
	defer close(stop)
	go readLines(r, lines, stop)

	bw := bufio.NewWriter(w)
	for {
		var l line
		select {
		case <-ctx.Done():
			return ctx.Err()
		case l = <-lines:
		}
		if l.done {
			return l.err
		}
		var reply []byte
		switch {
		case l.tooLong:
			n.logger.Warn("line too long", "limit", MaxLineBytes)
			reply = TooLong(MaxLineBytes)
		case len(bytes.TrimSpace(l.data)) == 0:
			continue
		default:
			reply = n.Handle(l.data)
		}
		bw.Write(reply)
		bw.WriteByte('\n')
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
	}
}

// readLines sends r's lines on out until the end of r or until stop is
// closed. Each line is a fresh slice, without its line ending.
func readLines(r io.Reader, out chan<- line, stop <-chan struct{}) {
	send := func(l line) bool {
		select {
		case out <- l:
			return true
		case <-stop:
			return false
		}
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			// +2 leaves room for "\r\n", trimmed below.
			if len(buf)+len(chunk) > MaxLineBytes+2 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(buf) > 0 || tooLong {
			data := bytes.TrimSuffix(bytes.TrimSuffix(buf, []byte("\n")), []byte("\r"))
			if len(data) > MaxLineBytes {
				tooLong, data = true, nil
			}
			if !send(line{data: data, tooLong: tooLong}) {
				return
			}
		}
		buf, tooLong = nil, false
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			} else {
				err = fmt.Errorf("read messages: %w", err)
			}
			send(line{done: true, err: err})
			return
		}
	}
}

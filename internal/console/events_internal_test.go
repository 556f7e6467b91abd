package console

import (
	"errors"
	"testing"
)

// TestHubKeepsOnlyTheLatestFrame: a client that does not read holds one
// frame, the latest, however many were sent; joins beyond the limit and
// after close are refused.
func TestHubKeepsOnlyTheLatestFrame(t *testing.T) {
	h := newHub(2)
	slow, err := h.join()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		h.send([]byte{byte(i % 256)})
	}
	if n := len(slow.frames); n != 1 {
		t.Fatalf("a slow client holds %d frames, want 1", n)
	}
	if f := <-slow.frames; f[0] != byte(999%256) {
		t.Errorf("a slow client holds frame %d, want the latest (%d)", f[0], 999%256)
	}
	if _, err := h.join(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.join(); !errors.Is(err, errTooMany) {
		t.Errorf("a third join: %v, want errTooMany", err)
	}
	h.leave(slow)
	if _, err := h.join(); err != nil {
		t.Errorf("a join after a leave: %v", err)
	}
	h.close()
	h.close() // twice is fine
	select {
	case <-h.done:
	default:
		t.Error("close did not close done")
	}
	if _, err := h.join(); !errors.Is(err, errDraining) {
		t.Errorf("a join after close: %v, want errDraining", err)
	}
}

package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// ui holds the page: plain HTML, CSS and JavaScript, no build step.
//
//go:embed ui
var ui embed.FS

// ContentSecurityPolicy is sent with every asset: nothing but this origin,
// no inline script or style, no framing, no form posts.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// assets serves the embedded files under /ui/ (index.html for /ui/).
type assets struct {
	files map[string]asset
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

func newAssets() *assets {
	a := &assets{files: map[string]asset{}}
	// The directory is compiled in: a failure here is a build defect that
	// every test of the console catches, so it is not returned.
	_ = fs.WalkDir(ui, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := ui.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a.files[strings.TrimPrefix(p, "ui/")] = asset{
			body: body, contentType: contentType(p), etag: `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
		return nil
	})
	return a
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return "application/octet-stream"
}

func (a *assets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if name == "" {
		name = "index.html"
	}
	f, ok := a.files[name]
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such console file: " + r.URL.Path})
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(f.body)
}

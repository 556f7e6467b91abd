package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/trafficsplit/splitter/envoy"
)

// PreviousRelease is the commit of the release before this tree: the
// upgrade tests run its splitter (and its module, and its rendered Envoy
// bootstrap) beside this tree's, built from the repository's own history.
const PreviousRelease = "8f6553d"

// Release is an earlier release's source tree, extracted from the
// repository's history, with what the upgrade tests build from it.
type Release struct {
	// Commit is the commit the tree was extracted from.
	Commit string
	// Src is the extracted tree (a module of its own, at the same path).
	Src string
	// Splitter is its `splitter` binary.
	Splitter string
	// renderer is a program built in Src that renders Envoy bootstraps
	// with that release's templates (RenderBootstrap).
	renderer string
}

// BuildRelease extracts commit from the git repository at root into dir
// (git archive, so the working tree is never touched) and builds its
// splitter there. The module cache and the build cache are the ones every
// other build uses: with -trimpath the packages that did not change since
// that release are compiled once, whichever tree asks. A repository
// without that commit (a shallow clone, an export without history) is an
// error that names the commit: the upgrade tests cannot run without it.
func BuildRelease(ctx context.Context, root, commit, dir string) (*Release, error) {
	rev := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--verify", "--quiet", commit+"^{commit}")
	if out, err := rev.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testbed: the previous release, commit %s, is not in the history of the repository at %s "+
			"(a shallow clone or an export? `git fetch --unshallow` brings it); the upgrade tests build it from there: %v %s",
			commit, root, err, strings.TrimSpace(string(out)))
	}
	src := filepath.Join(dir, "src-"+commit)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", commit)
	extract := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	var aerr, xerr bytes.Buffer
	archive.Stderr, extract.Stderr = &aerr, &xerr
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return nil, err
	}
	extract.Stdin = pipe
	if err := extract.Start(); err != nil {
		return nil, fmt.Errorf("testbed: tar: %w", err)
	}
	if err := archive.Run(); err != nil {
		_ = extract.Wait()
		return nil, fmt.Errorf("testbed: git archive %s: %w: %s", commit, err, strings.TrimSpace(aerr.String()))
	}
	if err := extract.Wait(); err != nil {
		return nil, fmt.Errorf("testbed: extracting %s: %w: %s", commit, err, strings.TrimSpace(xerr.String()))
	}
	r := &Release{Commit: commit, Src: src}
	bin := filepath.Join(dir, "bin-"+commit)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	r.Splitter = filepath.Join(bin, "splitter")
	if err := goBuild(ctx, src, nil, "-o", r.Splitter, "./cmd/splitter"); err != nil {
		return nil, fmt.Errorf("testbed: release %s: %w", commit, err)
	}
	return r, nil
}

// goBuild runs `go build -trimpath args...` in dir.
func goBuild(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-trimpath"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// BuildModule builds the release's libsplitter.so into dir (cgo).
func (r *Release) BuildModule(ctx context.Context, dir string) (string, error) {
	if err := goBuild(ctx, r.Src, []string{"CGO_ENABLED=1"}, "-buildmode=c-shared",
		"-o", filepath.Join(dir, "libsplitter.so"), "./cmd/libsplitter"); err != nil {
		return "", fmt.Errorf("testbed: release %s: %w", r.Commit, err)
	}
	return dir, nil
}

// rendererSource is a program built inside the release's tree: it renders
// the envoy.Params it reads (JSON) with that release's envoy package.
const rendererSource = `package main

import (
	"encoding/json"
	"os"

	"github.com/trafficsplit/splitter/envoy"
)

func main() {
	var p envoy.Params
	if err := json.NewDecoder(os.Stdin).Decode(&p); err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(2)
	}
	out, err := envoy.Render(p)
	if err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
`

// RenderBootstrap renders p with the release's own bootstrap template, as
// an Envoy deployed with that release runs it (fields the release does
// not know are left out). Use it as EnvoyOptions.Render.
func (r *Release) RenderBootstrap(p envoy.Params) ([]byte, error) {
	if r.renderer == "" {
		dir := filepath.Join(r.Src, "cmd", "upgrade-test-render")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(rendererSource), 0o644); err != nil {
			return nil, err
		}
		bin := filepath.Join(filepath.Dir(r.Splitter), "render-bootstrap")
		if err := goBuild(context.Background(), r.Src, nil, "-o", bin, "./cmd/upgrade-test-render"); err != nil {
			return nil, fmt.Errorf("testbed: release %s: %w", r.Commit, err)
		}
		r.renderer = bin
	}
	in, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.renderer)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("testbed: release %s: render bootstrap: %w: %s", r.Commit, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

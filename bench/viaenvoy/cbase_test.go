package viaenvoy

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/trafficsplit/splitter/internal/testbed"
)

// TestCBaselineDefinesEveryHook: the C baseline module exports every hook
// the splitter's module defines, so Envoy loads it with the same bootstrap
// and the benchmark compares like with like.
func TestCBaselineDefinesEveryHook(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatalf("no C compiler: %v (the module and this baseline need one)", err)
	}
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	abi := filepath.Join(root, "module", "abi")
	lib := filepath.Join(t.TempDir(), "libcbase.so")
	cmd := exec.CommandContext(t.Context(), cc, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-I", abi,
		"-o", lib, filepath.Join(root, "bench", "cmodule", "cbase.c"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compile cbase.c: %v\n%s", err, out)
	}
	f, err := elf.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, s := range syms {
		if s.Section != elf.SHN_UNDEF {
			exported[s.Name] = true
		}
	}
	hook := regexp.MustCompile(`\b(envoy_dynamic_module_on_[a-z_]+)\(`)
	want := map[string]bool{}
	for _, name := range []string{"hooks.c", "idle_hooks.h"} {
		src, err := os.ReadFile(filepath.Join(abi, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range hook.FindAllSubmatch(src, -1) {
			want[string(m[1])] = true
		}
	}
	if len(want) < 21 { // program_init and the 20 hooks Envoy 1.40 requires, at least
		t.Fatalf("found only %d hook definitions in module/abi: %v", len(want), want)
	}
	for name := range want {
		if !exported[name] {
			t.Errorf("the C baseline does not export %s, which the module defines", name)
		}
	}
}

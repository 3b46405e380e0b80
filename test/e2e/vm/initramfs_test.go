package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readCpio reads a newc archive into name -> (mode, data).
func readCpio(t *testing.T, b []byte) map[string]struct {
	mode int64
	data []byte
} {
	t.Helper()
	out := map[string]struct {
		mode int64
		data []byte
	}{}
	pad := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad cpio header at %d", off)
		}
		field := func(i int) int64 {
			v, err := strconv.ParseInt(string(b[off+6+8*i:off+14+8*i]), 16, 64)
			if err != nil {
				t.Fatalf("cpio header field %d at %d: %v", i, off, err)
			}
			return v
		}
		mode, size, nameSize := field(1), int(field(6)), int(field(11))
		name := string(b[off+110 : off+110+nameSize-1])
		off = pad(off + 110 + nameSize)
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = struct {
			mode int64
			data []byte
		}{mode, b[off : off+size]}
		off = pad(off + size)
	}
}

// fakeArtifacts is hack/vm-artifacts.sh's layout with the host's /bin/true
// standing in for dhclient (a dynamic program of this Debian release, which
// needs exactly libc.so.6 and the loader) and the host's libraries.
func fakeArtifacts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Skipf("host file for the fake artifacts: %v", err)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile("/bin/true", filepath.Join(dir, "busybox"))
	copyFile("/bin/true", filepath.Join(dir, "dhclient"))
	copyFile("/lib/x86_64-linux-gnu/libc.so.6", filepath.Join(dir, "lib", "libc.so.6"))
	copyFile("/lib64/ld-linux-x86-64.so.2", filepath.Join(dir, "lib", "ld-linux-x86-64.so.2"))
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules", "load"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestInitramfsHasTheDHCPv6Client(t *testing.T) {
	art := fakeArtifacts(t)
	path := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := writeInitramfs(path, art); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	files := readCpio(t, b)
	dhclient, _ := os.ReadFile(filepath.Join(art, "dhclient"))
	libc, _ := os.ReadFile(filepath.Join(art, "lib", "libc.so.6"))
	for name, want := range map[string][]byte{
		"sbin/dhclient":                             dhclient,
		"lib/x86_64-linux-gnu/libc.so.6":            libc,
		"dhclient6.script":                          dhclient6Script,
		"etc/dhclient6.conf":                        dhclient6Conf,
		"resolv.sh":                                 resolvScript,
		"lib64/ld-linux-x86-64.so.2":                []byte("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
		"lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": nil,
	} {
		f, ok := files[name]
		if !ok {
			t.Errorf("initramfs has no %s", name)
			continue
		}
		if want != nil && !bytes.Equal(f.data, want) {
			t.Errorf("%s: %d bytes, want %d", name, len(f.data), len(want))
		}
	}
	if m := files["lib64/ld-linux-x86-64.so.2"].mode; m&0o170000 != modeLink {
		t.Errorf("the loader at dhclient's PT_INTERP path has mode %o, want a symlink", m)
	}
	// The hooks source the shared resolv.conf merge by the path it has.
	for _, s := range [][]byte{udhcpcScript, dhclient6Script} {
		if !bytes.Contains(s, []byte(". /resolv.sh")) {
			t.Errorf("a hook does not source /resolv.sh")
		}
	}

	// A library dhclient needs but the artifacts lack fails the build,
	// naming it, rather than a guest whose DHCPv6 client cannot start.
	if err := os.Remove(filepath.Join(art, "lib", "libc.so.6")); err != nil {
		t.Fatal(err)
	}
	if err := writeInitramfs(path, art); err == nil || !strings.Contains(err.Error(), "libc.so.6") {
		t.Fatalf("initramfs without dhclient's libc: err %v, want one naming libc.so.6", err)
	}
}

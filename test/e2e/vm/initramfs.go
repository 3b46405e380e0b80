package vm

import (
	"bufio"
	"bytes"
	"debug/elf"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The guest's /init, its DHCP hooks and dhclient's config. They print the
// console lines that parseLine reads, so they live in this package, next to
// the parser.
var (
	//go:embed init.sh
	initScript []byte
	//go:embed udhcpc.sh
	udhcpcScript []byte
	//go:embed dhclient6.sh
	dhclient6Script []byte
	//go:embed dhclient6.conf
	dhclient6Conf []byte
	//go:embed resolv.sh
	resolvScript []byte
)

// libDir is where the guest's dynamic loader finds dhclient's libraries:
// Debian's multiarch folder, one of the loader's built-in search paths.
const libDir = "lib/x86_64-linux-gnu"

// writeInitramfs writes the VM's initramfs (an uncompressed newc cpio
// archive, which the kernel unpacks as it is) to path: busybox, dhclient
// with its loader and libraries, the scripts, the kernel modules listed in
// artifacts/modules/load and a /dev/console node, so /init has a console
// before it mounts devtmpfs. Building it here rather than in
// hack/vm-artifacts.sh keeps the scripts and their parser in one place; it
// takes milliseconds.
func writeInitramfs(path, artifacts string) error {
	busybox, err := os.ReadFile(filepath.Join(artifacts, "busybox"))
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	load, err := os.ReadFile(filepath.Join(artifacts, "modules", "load"))
	if err != nil {
		return fmt.Errorf("read module list: %w", err)
	}
	dhclient, err := readDynamic(artifacts, "dhclient")
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	bw := bufio.NewWriter(f)
	w := &cpioWriter{w: bw}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "lib/x86_64-linux-gnu", "lib64", "proc", "run", "sbin", "sys", "tmp"} {
		w.entry(d, modeDir|0o755, 0, 0, nil)
	}
	w.entry("dev/console", modeChar|0o600, 5, 1, nil)
	w.entry("bin/busybox", modeFile|0o755, 0, 0, busybox)
	w.entry("bin/sh", modeLink|0o777, 0, 0, []byte("busybox"))
	w.entry("init", modeFile|0o755, 0, 0, initScript)
	w.entry("udhcpc.script", modeFile|0o755, 0, 0, udhcpcScript)
	w.entry("resolv.sh", modeFile|0o644, 0, 0, resolvScript)
	w.entry("dhclient6.script", modeFile|0o755, 0, 0, dhclient6Script)
	w.entry("etc/dhclient6.conf", modeFile|0o644, 0, 0, dhclient6Conf)
	w.entry("sbin/dhclient", modeFile|0o755, 0, 0, dhclient.data)
	for _, l := range dhclient.libs {
		w.entry(libDir+"/"+l.name, modeFile|0o755, 0, 0, l.data)
	}
	// The loader where dhclient's ELF header says it is (/lib64/...), as a
	// link into libDir like Debian's own.
	w.entry(strings.TrimPrefix(dhclient.interp, "/"), modeLink|0o777, 0, 0, []byte("/"+libDir+"/"+filepath.Base(dhclient.interp)))
	w.entry("lib/modules/load", modeFile|0o644, 0, 0, load)
	for _, m := range strings.Fields(string(load)) {
		ko, err := os.ReadFile(filepath.Join(artifacts, "modules", m+".ko"))
		if err != nil {
			f.Close()
			return fmt.Errorf("read module %s: %w", m, err)
		}
		w.entry("lib/modules/"+m+".ko", modeFile|0o644, 0, 0, ko)
	}
	w.entry("TRAILER!!!", 0, 0, 0, nil)
	if w.err == nil {
		w.err = bw.Flush()
	}
	if err := f.Close(); w.err == nil {
		w.err = err
	}
	if w.err != nil {
		return fmt.Errorf("write initramfs %s: %w", path, w.err)
	}
	return nil
}

// dynamic is a dynamically linked program of the artifacts with the loader
// and libraries hack/vm-artifacts.sh copied for it into artifacts/lib.
type dynamic struct {
	data   []byte
	interp string // the loader's absolute path, from PT_INTERP
	libs   []lib
}

type lib struct {
	name string
	data []byte
}

// readDynamic reads artifacts/name and every file of artifacts/lib, and
// checks that the loader and each library the program names (DT_NEEDED) is
// among them: a missing one would only show as the guest's DHCPv6 client
// failing to start.
func readDynamic(artifacts, name string) (dynamic, error) {
	var d dynamic
	var err error
	if d.data, err = os.ReadFile(filepath.Join(artifacts, name)); err != nil {
		return d, fmt.Errorf("read %s (hack/vm-artifacts.sh of this version fetches it): %w", name, err)
	}
	f, err := elf.NewFile(bytes.NewReader(d.data))
	if err != nil {
		return d, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return d, fmt.Errorf("%s: read PT_INTERP: %w", name, err)
			}
			d.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return d, fmt.Errorf("%s: libraries: %w", name, err)
	}
	if !strings.HasPrefix(d.interp, "/") {
		return d, fmt.Errorf("%s: no loader path in its ELF header (%q)", name, d.interp)
	}
	entries, err := os.ReadDir(filepath.Join(artifacts, "lib"))
	if err != nil {
		return d, fmt.Errorf("read %s's libraries: %w", name, err)
	}
	have := map[string]bool{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(artifacts, "lib", e.Name()))
		if err != nil {
			return d, fmt.Errorf("read %s's libraries: %w", name, err)
		}
		d.libs = append(d.libs, lib{e.Name(), b})
		have[e.Name()] = true
	}
	for _, n := range append(needed, filepath.Base(d.interp)) {
		if !have[n] {
			return d, fmt.Errorf("%s needs %s, which is not in %s: rerun hack/vm-artifacts.sh", name, n, filepath.Join(artifacts, "lib"))
		}
	}
	return d, nil
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

// cpioWriter writes the "new ASCII" (070701) cpio format the kernel reads:
// a 110-byte hex header, the NUL-terminated name and the data, each padded
// to four bytes. The first error sticks.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpioWriter) entry(name string, mode, rdevMajor, rdevMinor int, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	_, c.err = c.w.Write(buf)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

package vm

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The guest's /init and udhcpc hook. They print the console lines that
// parseLine reads, so they live in this package, next to the parser.
var (
	//go:embed init.sh
	initScript []byte
	//go:embed udhcpc.sh
	udhcpcScript []byte
)

// writeInitramfs writes the VM's initramfs (an uncompressed newc cpio
// archive, which the kernel unpacks as it is) to path: busybox, the two
// scripts, the kernel modules listed in artifacts/modules/load and a
// /dev/console node, so /init has a console before it mounts devtmpfs.
// Building it here rather than in hack/vm-artifacts.sh keeps the scripts
// and their parser in one place; it takes milliseconds.
func writeInitramfs(path, artifacts string) error {
	busybox, err := os.ReadFile(filepath.Join(artifacts, "busybox"))
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	load, err := os.ReadFile(filepath.Join(artifacts, "modules", "load"))
	if err != nil {
		return fmt.Errorf("read module list: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	bw := bufio.NewWriter(f)
	w := &cpioWriter{w: bw}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "run", "sys", "tmp"} {
		w.entry(d, modeDir|0o755, 0, 0, nil)
	}
	w.entry("dev/console", modeChar|0o600, 5, 1, nil)
	w.entry("bin/busybox", modeFile|0o755, 0, 0, busybox)
	w.entry("bin/sh", modeLink|0o777, 0, 0, []byte("busybox"))
	w.entry("init", modeFile|0o755, 0, 0, initScript)
	w.entry("udhcpc.script", modeFile|0o755, 0, 0, udhcpcScript)
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

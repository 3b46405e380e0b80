package localcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Down kills the recorded processes and removes the recorded namespaces,
// and leaves alone a namespace it did not record, even with the same prefix.
func TestDownRemovesOnlyWhatWasRecorded(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	dir := t.TempDir()
	prefix := fmt.Sprintf("vmdt%d-", os.Getpid())
	recorded, other := prefix+"recorded", prefix+"other"
	for _, ns := range []string{recorded, other} {
		if err := addNetns(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = delNetns(ns) })
	}
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(exited) }()
	t.Cleanup(func() { _ = sleeper.Process.Kill() })

	st, err := openState(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	st.addPID(sleeper.Process.Pid)
	st.addNetns(recorded)

	did, err := Down(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("down: %q", did)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("recorded process still running after Down")
	}
	if _, err := os.Stat(filepath.Join(netnsDir, recorded)); !os.IsNotExist(err) {
		t.Fatalf("recorded namespace %s still exists (%v)", recorded, err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, other)); err != nil {
		t.Fatalf("namespace %s that Down did not record was removed: %v", other, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Fatal("state file left behind")
	}
	// A second Down finds nothing to do.
	if _, err := Down(dir); err != nil {
		t.Fatal(err)
	}
}

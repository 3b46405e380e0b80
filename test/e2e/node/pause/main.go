// Command pause is the sandbox ("pause") container of the test node's pods:
// it holds the pod's namespaces open, reaps orphaned children when it is the
// pod's PID 1, and exits on SIGINT or SIGTERM. It does what Kubernetes'
// pause image does; nothing can be pulled here, so the test node builds this
// one and names it in containerd's sandbox_image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

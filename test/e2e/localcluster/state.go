package localcluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stateFile records what a cluster started (process IDs with their start
// times, and the names of the network namespaces it created) so Down can
// remove it all even when the process that started it died without cleaning
// up.
type stateFile struct {
	mu    sync.Mutex
	path  string
	netns []string
}

func openState(path string) (*stateFile, error) {
	s := &stateFile{path: path}
	if err := os.WriteFile(path, fmt.Appendf(nil, "pid %d %d\n", os.Getpid(), startTime(os.Getpid())), 0o644); err != nil {
		return nil, fmt.Errorf("write state file: %w", err)
	}
	return s, nil
}

func (s *stateFile) add(line string) {
	f, err := os.OpenFile(s.path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func (s *stateFile) addPID(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(fmt.Sprintf("pid %d %d", pid, startTime(pid)))
}

func (s *stateFile) addNetns(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.netns = append(s.netns, name)
	s.add("netns " + name)
}

func (s *stateFile) netnsNames() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string{}, s.netns...)
}

func (s *stateFile) remove() {
	if s != nil {
		_ = os.Remove(s.path)
	}
}

// startTime is field 22 of /proc/PID/stat: it tells a recorded process from
// a later one that reused its PID.
func startTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(fields[19], 10, 64)
	return v
}

// childPIDs lists the running children of this process.
func childPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	me := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			out = append(out, pid)
		}
	}
	return out
}

func pidSet(pids []int) map[int]bool {
	m := map[int]bool{}
	for _, p := range pids {
		m[p] = true
	}
	return m
}

// Down removes what the cluster recorded in workDir/state: it asks the
// process that started the cluster to stop (SIGTERM, so it cleans up
// itself), then kills whatever recorded process is left and deletes the
// network namespaces it recorded creating. It returns what it did.
func Down(workDir string) ([]string, error) {
	path := filepath.Join(workDir, "state")
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return []string{"nothing recorded in " + path + ": nothing to stop"}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	type rec struct {
		pid   int
		start uint64
	}
	var netns []string
	var pids []rec
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 2 && fields[0] == "netns":
			netns = append(netns, fields[1])
		case len(fields) == 3 && fields[0] == "pid":
			pid, _ := strconv.Atoi(fields[1])
			st, _ := strconv.ParseUint(fields[2], 10, 64)
			pids = append(pids, rec{pid, st})
		}
	}
	f.Close()
	var did []string
	alive := func(r rec) bool { return r.pid > 1 && startTime(r.pid) != 0 && startTime(r.pid) == r.start }
	if len(pids) > 0 && alive(pids[0]) && pids[0].pid != os.Getpid() {
		_ = syscall.Kill(pids[0].pid, syscall.SIGTERM)
		did = append(did, fmt.Sprintf("asked the local cluster (pid %d) to stop", pids[0].pid))
		for i := 0; i < 150 && alive(pids[0]); i++ {
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, r := range pids {
		if alive(r) && r.pid != os.Getpid() {
			_ = syscall.Kill(r.pid, syscall.SIGKILL)
			did = append(did, fmt.Sprintf("killed pid %d", r.pid))
		}
	}
	for _, ns := range netns {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			continue // already removed by the cluster itself
		}
		if err := delNetns(ns); err != nil {
			return did, err
		}
		did = append(did, "removed network namespace "+ns)
	}
	_ = os.Remove(path)
	return did, nil
}

package reliability

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// A partial run rewrites only its own fragments; rendering reads them all.
func TestReportKeepsScenariosNotRun(t *testing.T) {
	dir := t.TempDir()
	old := Result{ID: "s1", Title: "old one", Passed: true, Date: "2026-01-01T00:00:00Z", Commit: "aaa", Figures: []Figure{{"violations", "0"}}}
	if err := WriteResult(dir, old); err != nil {
		t.Fatal(err)
	}
	r := Result{ID: "s2", Title: "new one", Date: "2026-02-02T00:00:00Z", Commit: "bbb", Failure: "leak"}
	r.Add("leaks", 3)
	if err := WriteResult(dir, r); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResults(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "s1" || got[1].ID != "s2" {
		t.Fatalf("results %+v", got)
	}
	md := string(Render(got))
	for _, want := range []string{"## S1: old one", "passed, measured 2026-01-01T00:00:00Z at commit aaa", "## S2: new one",
		"**FAILED**", "Failure: leak", "| leaks | 3 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if err := WriteResult(dir, Result{ID: "../x"}); err == nil {
		t.Error("a fragment id with a path was accepted")
	}
	if _, err := os.Stat(dir + "/s1.json"); err != nil {
		t.Error(err)
	}
}

func TestRenderEscapesPipes(t *testing.T) {
	md := string(Render([]Result{{ID: "s9", Title: "t", Figures: []Figure{{"a|b", "c|d"}}}}))
	if !strings.Contains(md, `| a\|b | c\|d |`) {
		t.Errorf("pipes not escaped:\n%s", md)
	}
}

// The committed report is the rendering of the committed fragments: a change
// to Render or to a fragment without `make reliability-report` fails here.
func TestTrackedReportMatchesResults(t *testing.T) {
	results, err := ReadResults(trackedResultsDir)
	if err != nil {
		t.Fatal(err)
	}
	want := Render(results)
	if os.Getenv("VM_DHCP_RELIABILITY_REPORT") == "1" {
		if err := os.WriteFile(trackedReportPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(trackedReportPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not the rendering of %s: run `make reliability-report`", trackedReportPath, trackedResultsDir)
	}
}

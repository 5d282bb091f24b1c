package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flashsale/flashsale/internal/bench"
)

func TestInvocationRecord(t *testing.T) {
	args := []string{"-binary", "bin/flashsale", "-command", "make bench", "-note", "shared box, it's noisy", "-out=BENCHMARKS.md", "--command=x"}
	got := shellJoin(withoutFlag(args, "command"))
	want := `-binary bin/flashsale -note 'shared box, it'\''s noisy' -out=BENCHMARKS.md`
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestFailuresNameWhatWasNotMeasured(t *testing.T) {
	var r bench.Results
	r.Ceiling = bench.CeilingResult{Ran: true, Tasks: 10, Enqueued: 10, Processed: 10}
	r.Hot = bench.ScenarioResult{Ran: true, Verified: true, OK: true}
	r.Spread = bench.ScenarioResult{Ran: true, Verified: true, OK: false}
	r.Backlog = bench.ScenarioResult{Err: "not run: context deadline exceeded"}
	// An HTTP front that lost an order is no floor (from a review: the run
	// exited 0 and was written).
	r.Front = bench.FrontResult{Ran: true, Orders: 10, Accepted: 10, Answered: 10, Processed: 9}
	got := failures(r, []string{bench.PartCeiling, bench.PartFront, bench.PartHot, bench.PartSpread, bench.PartBacklog})
	want := []string{"HTTP front: orders missing or failed", "spread: invariants violated", "backlog: not run: context deadline exceeded"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestWriteSectionKeepsTheRestOfTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\n## Lock\n\nkeep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "## make bench\n\nfigures\n"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "# Benchmarks\n\n## Lock\n\nkeep\n\n## make bench\n\nfigures\n"; string(b) != want {
		t.Errorf("got %q, want %q", b, want)
	}
}

package loadtest

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// showProgress writes progress to cfg.Progress until stop is closed: a
// progress bar of orders with an outcome on a terminal, plain lines
// otherwise.
func (r *runner) showProgress(stop <-chan struct{}) {
	w := r.cfg.Progress
	bar := isTerminal(w)
	every := r.cfg.ProgressInterval
	if every <= 0 {
		every = 2 * time.Second
		if bar {
			every = 200 * time.Millisecond
		}
	}
	total := int64(len(r.plan.orders))
	jobs := int64(len(r.plan.jobs))
	status := func() string {
		s := fmt.Sprintf("sent %d/%d accepted %d", r.sentN.Load(), jobs, r.acceptN.Load())
		if d := r.depthN.Load(); d >= 0 {
			s += fmt.Sprintf(" queue %d", d)
		}
		return s
	}

	var pb *progressbar.ProgressBar
	if bar {
		pb = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(status()),
			progressbar.OptionShowCount(),
			progressbar.OptionSetItsString("orders"),
			progressbar.OptionShowIts(),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(every),
		)
	}
	show := func() {
		done := r.doneN.Load()
		if pb != nil {
			pb.Describe(status())
			// Set64 only fails when the bar is full or hidden: nothing to do.
			_ = pb.Set64(min(done, total))
			return
		}
		fmt.Fprintf(w, "loadtest %s: %.0fs %s done %d/%d\n",
			r.cfg.RunID, time.Since(r.started).Seconds(), status(), done, total)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			show()
		case <-stop:
			show()
			if pb != nil {
				_ = pb.Exit() // Exit never fails.
				fmt.Fprintln(w)
			}
			return
		}
	}
}

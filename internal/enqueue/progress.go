package enqueue

import (
	"fmt"
	"io"
	"math"

	"github.com/schollz/progressbar/v3"

	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/termtext"
)

// showProgress reports whether progress bars are drawn: on stderr, when it
// is a terminal and the output is not --json, unless --progress says
// otherwise.
func (c *cli) showProgress() bool {
	switch c.f.progress {
	case "always":
		return true
	case "never":
		return false
	}
	return !c.f.json && bootstrap.IsTerminal(c.stderr)
}

// percentBar shows a waited-for task's progress reports. Its zero value
// (no bar) draws nothing.
type percentBar struct {
	bar      *progressbar.ProgressBar
	w        io.Writer // for lines, with or without a bar
	desc     string
	reported bool // the task has reported progress
}

func (c *cli) newPercentBar(desc string) *percentBar {
	desc = termtext.Escape(desc)
	if !c.showProgress() {
		return &percentBar{w: c.stderr}
	}
	b := progressbar.NewOptions(100,
		progressbar.OptionSetWriter(c.stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		// No throttle: --wait's polling already spaces the updates.
		progressbar.OptionSetRenderBlankState(true),
	)
	return &percentBar{bar: b, w: c.stderr, desc: desc}
}

// set shows percent (0 to 100) and message.
func (p *percentBar) set(percent float64, message string) {
	if p.bar == nil {
		return
	}
	if math.IsNaN(percent) {
		percent = 0
	}
	p.reported = true
	_ = p.bar.Set(int(math.Round(min(max(percent, 0), 100))))
	p.describe(message)
}

// describe changes the text beside the bar. The task's own messages come
// here: their control characters are escaped.
func (p *percentBar) describe(desc string) {
	desc = termtext.Escape(desc)
	if p.bar == nil || desc == p.desc {
		return
	}
	p.desc = desc
	p.bar.Describe(desc)
}

// println writes a line to stderr, above the bar if there is one.
func (p *percentBar) println(line string) {
	line = termtext.Escape(line)
	if p.bar == nil {
		fmt.Fprintln(p.w, line)
		return
	}
	_, _ = progressbar.Bprintln(p.bar, line)
}

// finish ends the bar. done fills it, keeping the task's last message if it
// reported any; desc replaces the message ("" keeps it).
func (p *percentBar) finish(done bool, desc string) {
	if p.bar == nil {
		return
	}
	if desc != "" && !(done && p.reported) {
		p.describe(desc)
	}
	if done {
		_ = p.bar.Set(100)
	}
	_ = p.bar.Exit()
	fmt.Fprintln(p.w)
	p.bar = nil
}

// close ends a bar that finish did not end.
func (p *percentBar) close() { p.finish(false, "") }

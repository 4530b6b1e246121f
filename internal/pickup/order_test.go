package pickup

import (
	"math"
	"testing"
)

// TestOrderFollowsWeights checks that the weighted order puts each queue
// first as often as its share of the weights, as asynq's does, and that
// strict priority orders by weight.
func TestOrderFollowsWeights(t *testing.T) {
	p := &Pickup{o: Options{Queues: map[string]int{"critical": 6, "default": 3, "low": 1}}}
	p.queues = []string{"critical", "default", "low"}
	const n = 20000
	first := map[string]int{}
	for range n {
		o := p.orderOf(p.queues, "")
		if len(o) != 3 || o[0] == o[1] || o[1] == o[2] || o[0] == o[2] {
			t.Fatalf("order = %v, want each queue once", o)
		}
		first[o[0]]++
	}
	for q, w := range p.o.Queues {
		got, want := float64(first[q])/n, float64(w)/10
		if math.Abs(got-want) > 0.02 {
			t.Errorf("%s first %.3f of the time, want %.1f", q, got, want)
		}
	}
	if o := p.orderOf(p.queues, "low"); o[0] != "low" || len(o) != 3 {
		t.Errorf(`order("low") = %v, want low first`, o)
	}
	p.o.StrictPriority = true
	if o := p.orderOf(p.queues, ""); o[0] != "critical" || o[1] != "default" || o[2] != "low" {
		t.Errorf("strict order = %v", o)
	}
}

package taskctx_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/taskctx"
)

// TestSetResultEverySink checks that every sink of the WithResult calls
// that built a ctx gets the result, innermost first, and that a ctx
// derived from another does not change what that one holds.
func TestSetResultEverySink(t *testing.T) {
	t.Parallel()
	var got []string
	outer := taskctx.WithResult(context.Background(), func(b []byte) { got = append(got, "outer:"+string(b)) })
	inner := taskctx.WithResult(outer, func(b []byte) { got = append(got, "inner:"+string(b)) })
	other := taskctx.WithResult(outer, func(b []byte) { got = append(got, "other:"+string(b)) })

	taskctx.SetResult(inner, []byte("r"))
	if want := "[inner:r outer:r]"; fmt.Sprint(got) != want {
		t.Errorf("sinks called %v, want %s", got, want)
	}
	got = nil
	taskctx.SetResult(other, []byte("s"))
	if want := "[other:s outer:s]"; fmt.Sprint(got) != want {
		t.Errorf("sinks called %v, want %s", got, want)
	}
	taskctx.SetResult(context.Background(), []byte("none")) // no sink: nothing happens
}

func TestAttempt(t *testing.T) {
	t.Parallel()
	if _, _, ok := taskctx.Events(context.Background()); ok {
		t.Error("Events of a bare ctx: ok")
	}
	if _, _, ok := taskctx.Events(taskctx.WithAttempt(context.Background(), &taskctx.Attempt{})); ok {
		t.Error("Events with a nil publisher: ok")
	}
	pub := events.NewPublisher(nil, events.PublisherOptions{})
	defer pub.Close()
	a := &taskctx.Attempt{Pub: pub, Base: events.Event{Queue: "q", TaskID: "1"}}
	var sunk []byte
	ctx := taskctx.WithResult(taskctx.WithAttempt(context.Background(), a), func(b []byte) { sunk = b })
	gotPub, gotBase, ok := taskctx.Events(ctx)
	if !ok || gotPub != pub || gotBase != &a.Base {
		t.Errorf("Events = %p, %p, %v; want %p, %p, true", gotPub, gotBase, ok, pub, &a.Base)
	}
	taskctx.SetResult(ctx, []byte("done"))
	if string(a.Result()) != "done" || string(sunk) != "done" {
		t.Errorf("results %q (Attempt), %q (sink); want both done", a.Result(), sunk)
	}
}

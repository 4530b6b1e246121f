// Package events publishes the life of forgeq tasks (enqueued, started,
// progress, failed, retried, succeeded, archived, cancelled) to one capped
// Redis Stream per queue, and reads it back: Watch follows a task's events
// as they happen and WaitResult waits for a task's result without polling.
//
// # Streams
//
// The events of queue q go to the stream [StreamKey](q),
// "forgeq:events:{q}", in the hash slot of asynq's keys of q. A Publisher
// writes the events it has for a queue in one entry, up to 64 events or
// about 1 KiB, and each XADD trims the stream to about
// PublisherOptions.MaxLen entries (MAXLEN ~), so a stream takes at most
// about MaxLen KiB, more only with results (see MaxResultBytes and the
// README's "Task events", which gives the entry's format). An event's ID
// is its entry's id and its index in the entry (see Event.ID and
// CheckID).
//
// # Publishing
//
// A worker publishes the events of the tasks it runs, and the enqueuing
// process (tasks.Client) the Enqueued events, through a [Publisher]:
// Publish never blocks and never fails; a goroutine writes what was
// published in pipelined batches, at once when it is idle.
//
// # Reading
//
//	c := events.NewClient(rdb, events.ClientOptions{})
//	for e, err := range c.Watch(ctx, "default", id, "") {
//		if err != nil {
//			return err // ctx ended
//		}
//		fmt.Println(e.Kind, e.Percent)
//		if e.Final() {
//			break
//		}
//	}
//	result, err := c.WaitResult(ctx, "default", id)
//
// A Client survives a lost Redis connection: it reads again from the last
// entry it saw, so no event is missed.
package events

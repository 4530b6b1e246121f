package events

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// WriteBatch writes batch as one batch of p's goroutine would, so that a
// test controls what is written together. p must be idle: nothing else
// published meanwhile.
func WriteBatch(p *Publisher, batch []Event) error { return p.write(batch) }

// ReadAll returns every event of queue's stream, oldest first, and the
// number of entries that hold them.
func ReadAll(ctx context.Context, rdb redis.UniversalClient, queue string) ([]Event, int, error) {
	msgs, err := rdb.XRange(ctx, StreamKey(queue), "-", "+").Result()
	if err != nil {
		return nil, 0, err
	}
	var evs []Event
	for _, m := range msgs {
		v, _ := entryValue(m.Values)
		if evs, err = decodeEntry(evs, queue, m.ID, v, "", 0); err != nil {
			return nil, 0, err
		}
	}
	return evs, len(msgs), nil
}

// Entries returns, for each entry of queue's stream, the number of events
// it holds and the size of its value.
func Entries(ctx context.Context, rdb redis.UniversalClient, queue string) (counts, sizes []int, err error) {
	msgs, err := rdb.XRange(ctx, StreamKey(queue), "-", "+").Result()
	if err != nil {
		return nil, nil, err
	}
	for _, m := range msgs {
		v, _ := entryValue(m.Values)
		evs, err := decodeEntry(nil, queue, m.ID, v, "", 0)
		if err != nil {
			return nil, nil, err
		}
		counts, sizes = append(counts, len(evs)), append(sizes, len(v))
	}
	return counts, sizes, nil
}

// Limits of an entry.
const (
	MaxPack   = maxPack
	PackBytes = packBytes
)

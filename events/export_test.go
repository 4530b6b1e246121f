package events

// WriteBatch writes batch as one batch of p's goroutine would, so that a
// test controls what is written together. p must be idle: nothing else
// published meanwhile.
func WriteBatch(p *Publisher, batch []Event) error { return p.write(batch, len(batch)) }

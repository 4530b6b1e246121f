package cachemgr

import "context"

// Future is the pending result of an async call. Wait blocks until the call
// has finished; Done is closed at that moment. A Future is safe for
// concurrent use and may be waited on any number of times, or never: the
// call completes either way.
type Future[T any] struct {
	done chan struct{}
	val  T
	err  error
}

func newFuture[T any]() *Future[T] { return &Future[T]{done: make(chan struct{})} }

func failedFuture[T any](err error) *Future[T] {
	f := newFuture[T]()
	f.err = err
	close(f.done)
	return f
}

func (f *Future[T]) resolve(v T, err error) {
	f.val, f.err = v, err
	close(f.done)
}

// Wait blocks until the call has finished and returns its result.
func (f *Future[T]) Wait() (T, error) {
	<-f.done
	return f.val, f.err
}

// WaitContext is Wait that gives up when ctx ends, returning ctx.Err().
// Giving up does not cancel the call.
func (f *Future[T]) WaitContext(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Done returns a channel that is closed when the call has finished.
func (f *Future[T]) Done() <-chan struct{} { return f.done }

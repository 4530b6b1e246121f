package worker

import (
	"time"

	"github.com/hibiken/asynq"
)

// delayedTaskCheckInterval is how often the asynq server moves due retries
// and delayed tasks to their queue. asynq's default of 5s would stretch a
// retry delay of a second or two several times over; once a second is
// asynq's own resolution (it keeps retry times in whole seconds) and costs
// two short scripts per queue per second.
const delayedTaskCheckInterval = time.Second

// retryDelay returns the asynq retry delay of WORKER_RETRY_DELAY_MIN and
// WORKER_RETRY_DELAY_MAX: exponential backoff with jitter. The retry after
// n earlier ones (n is 0 for the first retry) waits lo·2ⁿ plus a random
// jitter of up to half that, and never more than hi. The jitter spreads a
// burst of failures out instead of retrying it in lockstep; once lo·2ⁿ
// reaches hi every retry waits hi, and the spread of the earlier retries
// carries over. jitter(k) returns a random number in [0, k), as
// rand.Int64N does. lo must be positive and at most hi.
func retryDelay(lo, hi time.Duration, jitter func(int64) int64) asynq.RetryDelayFunc {
	return func(n int, _ error, _ *asynq.Task) time.Duration {
		d := lo
		for range max(n, 0) {
			if d >= hi/2 { // also keeps d*2 from overflowing
				return hi
			}
			d *= 2
		}
		if d >= hi {
			return hi
		}
		d += time.Duration(jitter(int64(d/2) + 1))
		return min(d, hi)
	}
}

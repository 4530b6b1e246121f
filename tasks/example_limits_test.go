package tasks_test

import (
	"context"
	"fmt"
	"time"

	"github.com/forgeq/forgeq/tasks"
)

// Declaring limits with a task type: at most 10 charges start per second
// across all workers, at most 3 run at once, and at most 1 per customer.
// The worker (worker.App) enforces them in Redis before the handler and
// postpones a task over a limit, without counting a retry.
func ExampleType_RateLimit() {
	type Charge struct {
		Customer string `json:"customer"`
		Cents    int    `json:"cents"`
	}
	charge := tasks.Define("billing:charge", "Charge a customer",
		func(ctx context.Context, deps tasks.Deps, c Charge) ([]byte, error) {
			return nil, nil // call the payment provider
		}).
		RateLimit(10, time.Second).
		MaxConcurrent(3).
		MaxConcurrentPerKey(1, func(c Charge) string { return c.Customer })

	d := charge.Definition()
	r, _ := d.RateLimit()
	key, _ := d.ConcurrencyKey([]byte(`{"customer":"acme","cents":500}`))
	fmt.Printf("%d per %v (bursts of %d), %d at once, %d per customer; this one's key: %s\n",
		r.N, r.Per, r.Burst, d.MaxConcurrent(), d.MaxConcurrentPerKey(), key)
	// Output: 10 per 1s (bursts of 10), 3 at once, 1 per customer; this one's key: acme
}

// A handler may postpone its own task, e.g. while a resource it needs is
// busy: the task runs again after the delay without counting a retry.
func ExamplePostpone() {
	type Sync struct {
		Account string `json:"account"`
	}
	busy := func(string) bool { return true }
	sync := tasks.Define("crm:sync", "Sync an account",
		func(ctx context.Context, deps tasks.Deps, s Sync) ([]byte, error) {
			if busy(s.Account) {
				return nil, tasks.Postpone(30*time.Second, "account_busy")
			}
			return nil, nil
		})
	_, err := sync.Handle(context.Background(), tasks.Deps{}, Sync{Account: "a1"})
	fmt.Println(err, tasks.Outcome(context.Background(), err))
	// Output: postponed for 30s: account_busy postponed
}

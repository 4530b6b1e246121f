package report

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// The task type names.
const (
	TypeBuild     = "report:build"
	TypeDay       = "report:day"
	TypeCleanup   = "report:cleanup"
	TypePlan      = "report:plan"
	TypeSummarize = "report:summarize"
	TypePublish   = "report:publish"
)

// Defaults of Options.
const (
	DefaultWork      = 20_000
	DefaultRetention = 24 * time.Hour
	// MaxWork bounds Options.Work: about a second per day on one core.
	MaxWork = 10_000_000
)

// DefaultAccounts are the accounts a Service knows unless told others.
var DefaultAccounts = []string{"acme", "globex", "initech"}

// grace is how much longer than its report a key lives, so that the hourly
// cleanup, not the TTL, removes it.
const grace = 6 * time.Hour

// ErrInvalidOptions is wrapped by New's errors.
var ErrInvalidOptions = errors.New("report: invalid options")

// Options configure a Service. The zero value of each field means its
// default.
type Options struct {
	// Accounts are the accounts reports may be made for. Default
	// DefaultAccounts.
	Accounts []string
	// Work is the cost of one day's figures in rounds of SHA-256, 1 to
	// MaxWork. Default DefaultWork (a few milliseconds).
	Work int
	// Retention is how long a report is kept after it is planned. Default
	// DefaultRetention; at least a minute.
	Retention time.Duration
	// MaxParallelDays bounds the report:day tasks LimitDays lets one
	// process compute at once. Default GOMAXPROCS.
	MaxParallelDays int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Service is the report service: its task types, handlers and routes. It
// is safe for concurrent use.
type Service struct {
	o        Options
	daySlots chan struct{}

	// Build plans a report and fans out its days.
	Build *tasks.Type[BuildArgs]
	// Day computes and stores one day of a report.
	Day *tasks.Type[DayArgs]
	// Cleanup deletes expired reports.
	Cleanup *tasks.Type[CleanupArgs]
	// Plan stores a report's plan without fanning out its days: the
	// first step of the report workflow (see PostPublishReport).
	Plan *tasks.Type[BuildArgs]
	// Summarize is the report workflow's group callback: it adds up the
	// days computed and lists the days that failed.
	Summarize *tasks.Type[SummarizeArgs]
	// Publish is the report workflow's last step: it stores the summary
	// beside the report.
	Publish *tasks.Type[PublishArgs]
}

// New returns a Service with o. Options out of range give an error
// wrapping ErrInvalidOptions.
func New(o Options) (*Service, error) {
	if len(o.Accounts) == 0 {
		o.Accounts = DefaultAccounts
	}
	for _, a := range o.Accounts {
		if err := checkAccount(a); err != nil {
			return nil, fmt.Errorf("%w: accounts: %v", ErrInvalidOptions, err)
		}
	}
	o.Accounts = slices.Clone(o.Accounts)
	if o.Work == 0 {
		o.Work = DefaultWork
	}
	if o.Work < 1 || o.Work > MaxWork {
		return nil, fmt.Errorf("%w: work %d is outside [1, %d]", ErrInvalidOptions, o.Work, MaxWork)
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.Retention < time.Minute {
		return nil, fmt.Errorf("%w: retention %v is under a minute", ErrInvalidOptions, o.Retention)
	}
	if o.MaxParallelDays == 0 {
		o.MaxParallelDays = runtime.GOMAXPROCS(0)
	}
	if o.MaxParallelDays < 0 {
		return nil, fmt.Errorf("%w: max parallel days %d is negative", ErrInvalidOptions, o.MaxParallelDays)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Service{o: o, daySlots: make(chan struct{}, o.MaxParallelDays)}
	s.Build = tasks.Define(TypeBuild,
		"Plan a report of an account's daily figures from one day to another and compute each day in a report:day task",
		s.build, asynq.Queue("default"), asynq.MaxRetry(5), asynq.Timeout(time.Minute))
	s.Day = tasks.Define(TypeDay,
		"Compute and store one day of a report (enqueued by report:build, or a member of the report workflow's group)",
		s.day, asynq.Queue("default"), asynq.MaxRetry(5), asynq.Timeout(time.Minute))
	s.Cleanup = tasks.Define(TypeCleanup,
		"Delete the reports that expired in the last hours (scheduled every hour)",
		s.cleanup, asynq.Queue("low"), asynq.MaxRetry(2), asynq.Timeout(5*time.Minute))
	s.Plan = tasks.Define(TypePlan,
		"Store a report's plan without fanning out its days (the first step of the report workflow of POST /reports/publish)",
		s.plan, asynq.Queue("default"), asynq.MaxRetry(5), asynq.Timeout(time.Minute))
	s.Summarize = tasks.Define(TypeSummarize,
		"Add up a report's computed days and list the days that failed (the callback of the report workflow's group of report:day steps)",
		s.summarize, asynq.Queue("default"), asynq.MaxRetry(5), asynq.Timeout(time.Minute)).
		TakesPrevious("the outcomes of the group's report:day members, one per day of the report (workflow.Results)")
	s.Publish = tasks.Define(TypePublish,
		"Store a report's summary beside the report, where GET /reports/{id} shows it (the last step of the report workflow)",
		s.publish, asynq.Queue("default"), asynq.MaxRetry(5), asynq.Timeout(time.Minute)).
		TakesPrevious("the report's summary, report:summarize's result (JSON Summary)")
	return s, nil
}

// Types returns the Service's task types, for worker.App.Register.
func (s *Service) Types() []tasks.Declared {
	return []tasks.Declared{s.Build, s.Day, s.Cleanup, s.Plan, s.Summarize, s.Publish}
}

// Accounts returns the accounts reports may be made for.
func (s *Service) Accounts() []string { return slices.Clone(s.o.Accounts) }

// knownAccount reports whether reports may be made for a.
func (s *Service) knownAccount(a string) bool { return slices.Contains(s.o.Accounts, a) }

// PlanKey is the cache key of report id's plan.
func PlanKey(id string) string { return "report:" + id }

// DayKey is the cache key of one day of a report whose data goes in
// bucket (see Plan.Bucket).
func DayKey(bucket, id, date string) string {
	return "report-days:" + bucket + ":" + id + ":" + date
}

// SummaryKey is the cache key of the summary report:publish stored for
// report id, whose data goes in bucket. It is under the bucket's pattern,
// so report:cleanup deletes it with the report's days.
func SummaryKey(bucket, id string) string {
	return "report-days:" + bucket + ":" + id + ":summary"
}

// bucketPattern matches every day of the reports of bucket, for
// DeletePattern.
func bucketPattern(bucket string) string { return "report-days:" + bucket + ":*" }

// bucketOf returns the bucket of a report expiring at t: its UTC hour.
func bucketOf(t time.Time) string { return t.UTC().Format("2006010215") }

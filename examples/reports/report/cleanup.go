package report

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/tasks"
)

// DefaultLookbackHours is how many past hours a report:cleanup looks at
// when its payload does not say.
const DefaultLookbackHours = 3

// CleanupArgs is the payload of a report:cleanup task.
type CleanupArgs struct {
	LookbackHours int `json:"lookback_hours,omitempty" help:"delete the reports that expired in this many past hours, 1 to 168 (default 3: an hourly cleanup that missed two ticks catches up)"`
}

// Validate checks LookbackHours' range.
func (a CleanupArgs) Validate() error {
	if a.LookbackHours < 0 || a.LookbackHours > 168 {
		return fmt.Errorf("field %q: %d is outside [1, 168]", "lookback_hours", a.LookbackHours)
	}
	return nil
}

// CleanupResult is the result of a report:cleanup task.
type CleanupResult struct {
	// Buckets are the hours looked at, oldest first.
	Buckets []string `json:"buckets"`
	// Deleted counts the keys deleted.
	Deleted int64 `json:"deleted"`
}

// cleanup is the handler of report:cleanup: it deletes the days of every
// report that expired in one of the last LookbackHours whole hours, one
// DeletePattern per hour. The hour under way is left alone: some of its
// reports have not expired yet.
func (s *Service) cleanup(ctx context.Context, deps tasks.Deps, a CleanupArgs) ([]byte, error) {
	hours := a.LookbackHours
	if hours == 0 {
		hours = DefaultLookbackHours
	}
	current := s.o.Now().UTC().Truncate(time.Hour)
	res := CleanupResult{Buckets: []string{}}
	for h := hours; h >= 1; h-- {
		bucket := bucketOf(current.Add(-time.Duration(h) * time.Hour))
		n, err := deps.Cache.DeletePattern(ctx, bucketPattern(bucket))
		if err != nil {
			return nil, fmt.Errorf("report cleanup: bucket %s: %w", bucket, err)
		}
		res.Buckets = append(res.Buckets, bucket)
		res.Deleted += n
	}
	if deps.Logger != nil && res.Deleted > 0 {
		deps.Logger.Info("expired reports deleted", zap.Int64("keys", res.Deleted), zap.Strings("buckets", res.Buckets))
	}
	return json.Marshal(res)
}

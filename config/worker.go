package config

import "fmt"

// Keys of the retry delay bounds, which are checked against each other.
const (
	keyRetryDelayMin = "worker.retry_delay_min"
	keyRetryDelayMax = "worker.retry_delay_max"
)

// checkRetryDelay checks that the first retry's delay is not above the
// longest one. Its error names both settings and their values.
func checkRetryDelay(w Worker, where map[string]string, failed map[string]bool) []error {
	if failed[keyRetryDelayMin] || failed[keyRetryDelayMax] || w.RetryDelayMin <= w.RetryDelayMax {
		return nil
	}
	return []error{fmt.Errorf("%s: %q is above %q, the longest retry delay (from %s); want at most that",
		where[keyRetryDelayMin], w.RetryDelayMin.String(), w.RetryDelayMax.String(), where[keyRetryDelayMax])}
}

package worker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// healthProbeTimeout bounds one health probe.
const healthProbeTimeout = 3 * time.Second

// probe is `worker --probe URL`: one GET, success on a 2xx answer. It lets
// a container healthcheck run in an image that has no shell and no curl.
func probe(ctx context.Context, raw string, stdout io.Writer) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--probe %q: want an http:// or https:// URL", raw)}
	}
	ctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", u.Redacted(), err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("probe %s: status %s", u.Redacted(), resp.Status)
	}
	fmt.Fprintf(stdout, "probe %s: %s\n", u.Redacted(), resp.Status)
	return nil
}

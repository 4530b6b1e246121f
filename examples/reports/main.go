// Command reports is an example forgeq program: a report service. POST
// /reports (or `reports enqueue report:build ...`) plans a report of an
// account's daily figures over a date range; report:build fans out one
// report:day task per day, each computes and caches its day, GET
// /reports/{id} assembles the report, and report:cleanup deletes expired
// reports every hour. POST /reports/publish makes a report as a workflow
// instead: the days in a group, then a summary listing the failed days,
// then its publication. See README.md.
package main

import (
	"fmt"
	"os"

	"github.com/forgeq/forgeq/examples/reports/report"
	"github.com/forgeq/forgeq/worker"
)

func main() {
	reports, err := report.NewFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reports: %v\n", err)
		os.Exit(2)
	}
	worker.New("reports").
		Register(reports.Types()...).
		Use(reports.LimitDays()).
		Handle("GET /reports/{id}", reports.GetReport).
		Handle("POST /reports", reports.PostReport).
		Handle("POST /reports/publish", reports.PostPublishReport).
		Schedule(worker.Periodic{Name: "report-cleanup", Spec: "@every 1h", Type: report.TypeCleanup}).
		Main()
}

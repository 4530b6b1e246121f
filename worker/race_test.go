//go:build race

package worker

// raceEnabled is true when the tests run with -race; the worker binary the
// process tests start is then built with it too.
const raceEnabled = true

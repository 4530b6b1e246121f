//go:build race

package proctest

// raceEnabled is true when the tests run with -race; the binaries are then
// built with it too.
const raceEnabled = true

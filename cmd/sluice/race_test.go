//go:build race

package main

// raceEnabled: the race detector is on. Its sync.Pool drops a share of
// what is put back, so pooled buffers are allocated again now and then.
const raceEnabled = true

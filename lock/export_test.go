package lock

// SetLocalQueue turns the local queue of waiters on or off, so that the
// benchmarks can measure what it brings. Call it before using c.
func SetLocalQueue(c *Client, on bool) { c.noQueue = !on }

// AcquireScript is acquire.lua, for tests that run it by hand.
var AcquireScript = acquireScript

package lock

// SetLocalQueue turns the local queue of waiters on or off, so that the
// benchmarks can measure what it brings. Call it before using c.
func SetLocalQueue(c *Client, on bool) { c.noQueue = !on }

// AcquireScript is acquire.lua, for tests that run it by hand.
var AcquireScript = acquireScript

// SubscriptionStates counts the channels whose subscription state c keeps,
// over all its nodes.
func SubscriptionStates(c *Client) int {
	n := 0
	for _, nd := range c.nodes {
		nd.sub.mu.Lock()
		n += len(nd.sub.state)
		nd.sub.mu.Unlock()
	}
	return n
}

package testenv

import (
	"context"
	"net"
	"sync/atomic"
)

// LossyDialer dials connections whose writes are lost while Lose is set: a
// request sent then never reaches the server and its reply never comes, as
// when a partition or a failover drops a connection unannounced. (A paused
// Redis is no such outage: at SIGCONT it answers every request waiting in
// its sockets.) Use its Dial as a go-redis Options.Dialer.
type LossyDialer struct{ Lose atomic.Bool }

// Dial connects as net.Dialer does, through a connection that drops writes
// while Lose is set.
func (d *LossyDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &lossyConn{Conn: c, d: d}, nil
}

type lossyConn struct {
	net.Conn
	d *LossyDialer
}

func (c *lossyConn) Write(b []byte) (int, error) {
	if c.d.Lose.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

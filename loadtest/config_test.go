package loadtest

import (
	"errors"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	ok := Config{APIs: []string{"http://127.0.0.1:8080/"}, Orders: 10}
	tests := []struct {
		name   string
		modify func(*Config)
		valid  bool
	}{
		{"minimal", func(*Config) {}, true},
		{"no api", func(c *Config) { c.APIs = nil }, false},
		{"ftp api", func(c *Config) { c.APIs = []string{"ftp://127.0.0.1"} }, false},
		{"api with query", func(c *Config) { c.APIs = []string{"http://127.0.0.1:8080/?x=1"} }, false},
		{"zero orders", func(c *Config) { c.Orders = 0 }, false},
		{"too many orders", func(c *Config) { c.Orders = MaxOrders + 1 }, false},
		{"negative stock", func(c *Config) { c.Stock = -1 }, false},
		{"dup rate above 1", func(c *Config) { c.DupRate = 1.5 }, false},
		{"negative rate", func(c *Config) { c.Rate = -1 }, false},
		{"poll wait above 30s", func(c *Config) { c.PollWait = 31 * time.Second }, false},
		{"bad run id", func(c *Config) { c.RunID = "a/b" }, false},
		{"run id beginning with _", func(c *Config) { c.RunID = "_a" }, false},
		{"run id beginning with -", func(c *Config) { c.RunID = "-a" }, false},
		{"run id with _ and - inside", func(c *Config) { c.RunID = "a_b-c" }, true},
		{"loopback only, loopback", func(c *Config) { c.LoopbackOnly = true; c.APIs = []string{"http://localhost:1", "http://[::1]:2"} }, true},
		{"loopback only, remote", func(c *Config) { c.LoopbackOnly = true; c.APIs = []string{"http://10.0.0.1:8080"} }, false},
		{"loopback only, name", func(c *Config) { c.LoopbackOnly = true; c.APIs = []string{"http://example.com"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.modify(&c)
			_, err := c.withDefaults()
			if tt.valid && err != nil {
				t.Fatalf("withDefaults: %v, want no error", err)
			}
			if !tt.valid && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("withDefaults error %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{APIs: []string{"http://127.0.0.1:8080/"}, Orders: 10, MaxRetries: -1}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.APIs[0] != "http://127.0.0.1:8080" {
		t.Errorf("api %q, want the trailing slash trimmed", c.APIs[0])
	}
	if c.Users != 10 || c.Products != 1 || c.MaxQuantity != 1 || c.Concurrency != DefaultConcurrency ||
		c.SettleConcurrency != DefaultConcurrency || c.PollWait != DefaultPollWait || c.MaxRetries != 0 || c.RunID == "" {
		t.Errorf("defaults %+v: want users 10, products 1, max quantity 1, concurrency %d, poll wait %v, no retries, a run id",
			c, DefaultConcurrency, DefaultPollWait)
	}
}

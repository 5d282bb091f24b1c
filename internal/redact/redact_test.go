package redact_test

import (
	"strings"
	"testing"

	"github.com/flashsale/flashsale/internal/redact"
)

func TestURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"},
		{"postgres://app:hunter2@db:5432/x?sslmode=disable", "postgres://app:***@db:5432/x?sslmode=disable"},
		{"postgres://app@db/x?password=hunter2&sslmode=disable", "postgres://app@db/x?password=***&sslmode=disable"},
		{"redis-sentinel://:s3cret@h1:26379,h2:26379?master=m&Password=hunter2", "redis-sentinel://:***@h1:26379,h2:26379?Password=***&master=m"},
		{"postgres://db/x?sslpassword=hunter2", "postgres://db/x?sslpassword=***"},
		{"redis://h:1/0?pass=hunter2", "redis://h:1/0?pass=***"},
		{"redis://h:1/0?passwd=hunter2", "redis://h:1/0?passwd=***"},
		{"redis://h:1/0?secret=hunter2", "redis://h:1/0?secret=***"},
		{"redis://h:1/0?token=hunter2", "redis://h:1/0?token=***"},
		{"postgres://db/x?sslkey=hunter2", "postgres://db/x?sslkey=***"},
		{"postgres:/app:hunter2@db/x", "(hidden: not a URL)"}, // one slash: no host, all path
		{"host=db user=app password=hunter2 dbname=x", "(hidden: not a URL)"},
		{"hunter2", "(hidden: not a URL)"},
		{"redis:hunter2", "(hidden: not a URL)"},
		{"://bad", "(hidden: not a URL)"},
	} {
		got := redact.URL(tc.in)
		if got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "hunter2") || strings.Contains(got, "s3cret") {
			t.Errorf("URL(%q) = %q: shows the secret", tc.in, got)
		}
	}
	if got, want := redact.URLs("redis://:a1@h:1, redis://h:2"), "redis://:***@h:1,redis://h:2"; got != want {
		t.Errorf("URLs = %q, want %q", got, want)
	}
}

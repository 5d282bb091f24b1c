package main

import (
	"context"
	"strings"
	"testing"
)

// flashsale loadtest's -admin-token defaults to $FLASHSALE_ADMIN_TOKEN, and
// the flag package prints a string flag's default in the usage: `loadtest
// -h`, and the usage printed to stderr after any mistyped flag (a CI log),
// showed the admin token in clear. No other command shows it (their flags'
// defaults are empty). Not parallel: it sets the environment.
func TestLoadtestUsageHidesTheAdminToken(t *testing.T) {
	const secret = "s3cret-admin-token-0123456789"
	t.Setenv("FLASHSALE_ADMIN_TOKEN", secret)
	for _, args := range [][]string{{"loadtest", "-h"}, {"loadtest", "-no-such-flag"}} {
		var stdout, stderr strings.Builder
		run(context.Background(), args, &stdout, &stderr)
		if out := stdout.String() + stderr.String(); strings.Contains(out, secret) {
			_, line, _ := strings.Cut(out, "-admin-token string\n")
			line, _, _ = strings.Cut(line, "\n")
			t.Errorf("%v shows the admin token: %q", args, line)
		}
	}
}

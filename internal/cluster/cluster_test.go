package cluster_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/flashsale/flashsale/internal/cluster"
)

// A cluster's processes must not inherit the shell's FLASHSALE_* settings
// (say, FLASHSALE_QUEUE or FLASHSALE_WORKER_MODE): only what the test or
// the bench configures.
func TestBaseEnvDropsFlashsaleSettings(t *testing.T) {
	t.Setenv("FLASHSALE_WORKER_MODE", "single")
	t.Setenv("FLASHSALE_QUEUE", "someone-elses")
	t.Setenv("NOT_FLASHSALE_X", "kept")
	env := cluster.BaseEnv()
	for _, kv := range env {
		if strings.HasPrefix(kv, "FLASHSALE_") {
			t.Errorf("BaseEnv passes on %q", kv)
		}
	}
	if !slices.Contains(env, "NOT_FLASHSALE_X=kept") {
		t.Errorf("BaseEnv dropped NOT_FLASHSALE_X: %q", env)
	}
}

package obs

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/localsvc"
	"github.com/flashsale/flashsale/internal/testenv"
)

// Once Redis answers again, the queue's metrics come back within about the
// collector's bound. Before, a collection whose request was lost ran
// asynq's calls (no context) until go-redis gave up: one read timeout (20s
// here, as a URL's read_timeout may set; 3s by default, once per try), and
// every scrape meanwhile went without the queue's metrics.
func TestQueueCollectorRecoversOnceRedisAnswersAgain(t *testing.T) {
	t.Parallel()
	node := testenv.PrivateRedis(t, localsvc.RedisOptions{})
	opt, err := redis.ParseURL(node.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	plain := redis.NewClient(opt)
	t.Cleanup(func() { _ = plain.Close() })
	client := asynq.NewClientFromRedisClient(plain)
	if _, err := client.EnqueueContext(t.Context(), asynq.NewTask("t", nil), asynq.Queue("q")); err != nil {
		t.Fatal(err)
	}

	d := &testenv.LossyDialer{}
	lopt := *opt
	// As queue.NewRedisClient's: calls end at their context's deadline.
	lopt.Dialer, lopt.ReadTimeout, lopt.ContextTimeoutEnabled = d.Dial, 20*time.Second, true
	rdb := redis.NewClient(&lopt)
	t.Cleanup(func() { _ = rdb.Close() })
	const bound = 300 * time.Millisecond
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewQueueCollector(rdb, bound))
	scrape := func(timedOut float64) error {
		want := fmt.Sprintf(`
# HELP flashsale_collector_timed_out 1 when this scrape went on without a collector's metrics (it took too long, or its last collection has not ended).
# TYPE flashsale_collector_timed_out gauge
flashsale_collector_timed_out{collector="asynq_queue"} %v
`, timedOut)
		if timedOut == 0 {
			want += `
# HELP asynq_queue_size Number of tasks in a queue
# TYPE asynq_queue_size gauge
asynq_queue_size{queue="q"} 1
`
		}
		return testutil.GatherAndCompare(reg, strings.NewReader(want), "flashsale_collector_timed_out", "asynq_queue_size")
	}
	if err := scrape(0); err != nil {
		t.Fatalf("scrape with Redis answering: %v", err)
	}

	d.Lose.Store(true)
	if err := scrape(1); err != nil {
		t.Fatalf("scrape with its requests lost: %v", err)
	}
	d.Lose.Store(false)
	// Well under the lost request's read timeout, several times the bound.
	testenv.Eventually(t, 5*time.Second, func() error { return scrape(0) })
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flashsale/flashsale/internal/cluster"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/inventory"
)

// An api or worker process SIGTERMed during its start (here: waiting on its
// database, whose schema table the test holds locked) stops cleanly: exit
// 0, with a log line saying so, and every line a log line. Before, the
// signal cancelled its start's calls, and it failed: exit 1 and a line
// that is no log line ("flashsale worker: FLASHSALE_DATABASE_URL: ...:
// context canceled"), which dev, stopping its processes, showed as theirs.
//
// The process is this test binary as api or worker (TestMain runs main).
func TestSignalDuringStartIsACleanStop(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	if _, err := inventory.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	ns := testenv.QueueNamespace(t, testenv.Redis(t))
	for _, name := range []string{"api", "worker"} {
		t.Run(name, func(t *testing.T) {
			// One at a time: both wait on the same lock.
			holder, _ := testenv.HoldLock(t, db, `LOCK TABLE goose_db_version IN ACCESS EXCLUSIVE MODE`)
			watch, err := pgx.Connect(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			defer watch.Close(ctx)

			out := &testenv.LogBuffer{}
			cmd := exec.Command(os.Args[0], name)
			cmd.Env = append(cluster.BaseEnv(), "FLASHSALE_DATABASE_URL="+db, "FLASHSALE_REDIS_URL="+testenv.RedisURL(),
				"FLASHSALE_QUEUE=q_"+ns, "FLASHSALE_KEY_PREFIX="+ns+":", "FLASHSALE_HTTP_ADDR=127.0.0.1:0",
				"FLASHSALE_LOG_FORMAT=json")
			cmd.Stdout, cmd.Stderr = out, out
			// Should the test binary die, its child stops too (a signal
			// it handles: it holds nothing of its own to clean up).
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			stopped := false
			defer func() {
				// A failed test still stops it: a SIGTERM every second (a
				// second one ends it at once).
				for !stopped {
					_ = cmd.Process.Signal(syscall.SIGTERM)
					select {
					case <-done:
						stopped = true
					case <-time.After(time.Second):
					}
				}
			}()
			// Its start waits on the lock: its signal handler is in place.
			testenv.Eventually(t, 30*time.Second, func() error {
				select {
				case err := <-done:
					stopped = true
					t.Fatalf("%s ended before its start waited on the database: %v\n%s", name, err, out)
				default:
				}
				waiting, err := testenv.WaitsOn(ctx, watch, holder)
				if err == nil && !waiting {
					err = errors.New("its start does not wait on the locked schema table yet")
				}
				return err
			})
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err = <-done:
				stopped = true
			case <-time.After(30 * time.Second):
				t.Fatalf("%s did not stop within 30s of a SIGTERM during its start:\n%s", name, out)
			}
			var logged bool
			for line := range strings.Lines(out.String()) {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Errorf("%s wrote a line that is no log line: %q", name, line)
					continue
				}
				if rec["msg"] == "stopped during its start: signal received" && rec["component"] == name {
					logged = true
				}
			}
			if err != nil || !logged {
				t.Errorf("%s SIGTERMed during its start: ended with %v, logged its stop: %v; want exit status 0 and a line saying so:\n%s",
					name, exitStatus(err), logged, out)
			}
		})
	}
}

// exitStatus says how a process ended, from exec.Cmd.Wait's error.
func exitStatus(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return fmt.Sprint(err)
}

package main

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// composeService is what the checks below read of a docker-compose.yml
// service.
type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	PullPolicy  string            `yaml:"pull_policy"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
}

// readCompose reads docker-compose.yml's services.
func readCompose(t *testing.T) map[string]composeService {
	t.Helper()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]composeService `yaml:"services"`
	}
	// AllowDuplicateMapKey: go-yaml takes a key that overrides one merged
	// in (api-2's ports over api-1's) for a duplicate.
	if err := yaml.UnmarshalWithOptions(b, &file, yaml.AllowDuplicateMapKey()); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return file.Services
}

// docker-compose.yml builds the flashsale image once, in one service, and
// every service that runs the binary runs that image, never pulled (from
// an operator review: four services built it, each its own copy); and
// every FLASHSALE_* variable it sets is a setting of the binary. No Docker
// engine runs here: this reads the file, as an operator would.
func TestComposeBuildsTheImageOnce(t *testing.T) {
	t.Parallel()
	services := readCompose(t)
	var builds, runs []string // services with a build; services running flashsale
	images := map[string]bool{}
	ran := map[string]bool{}
	for name, s := range services {
		if s.Build != nil {
			builds = append(builds, name)
		}
		if len(s.Command) == 0 || !slices.ContainsFunc(commands(), func(c command) bool { return c.name == s.Command[0] }) {
			continue
		}
		runs = append(runs, name)
		ran[s.Command[0]] = true
		images[s.Image] = true
		if s.Build == nil && s.PullPolicy != "never" {
			t.Errorf("%s: pull_policy %q, want never (its image is built here, not in a registry)", name, s.PullPolicy)
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "FLASHSALE_") && !slices.ContainsFunc(settings, func(st setting) bool { return st.env == k }) {
				t.Errorf("%s: %s is no setting of flashsale", name, k)
			}
		}
	}
	for _, c := range []string{"migrate", "api", "worker"} {
		if !ran[c] {
			t.Errorf("no service runs flashsale %s", c)
		}
	}
	if len(builds) != 1 || !slices.Contains(runs, builds[0]) {
		t.Errorf("services with a build: %v, want one, running flashsale", builds)
	}
	if len(images) != 1 || images[""] {
		t.Errorf("the services running flashsale (%v) run images %v, want one, named", runs, images)
	}
}

// composeWorkerScale is how many workers docker-compose.yml's postgres has
// room for (its comment says so; README's connection budget too).
const composeWorkerScale = 60

// docker-compose.yml's postgres holds the pools of its APIs and of
// composeWorkerScale workers: at PostgreSQL's default max_connections
// (100), `--scale worker=20` left workers failing to connect (a review's
// finding: 2 × 12 + 20 × 4 = 104).
func TestComposePostgresHoldsTheScale(t *testing.T) {
	t.Parallel()
	services := readCompose(t)
	pg, ok := services["postgres"]
	if !ok {
		t.Fatal("docker-compose.yml has no postgres service")
	}
	maxConns := 100 // PostgreSQL's default
	for i, arg := range pg.Command {
		v, found := strings.CutPrefix(arg, "max_connections=")
		if !found || i == 0 || pg.Command[i-1] != "-c" {
			continue
		}
		var err error
		if maxConns, err = strconv.Atoi(v); err != nil {
			t.Fatalf("postgres command %q: %v", pg.Command, err)
		}
	}
	apis := 0
	for _, s := range services {
		if len(s.Command) > 0 && s.Command[0] == "api" {
			apis++
		}
	}
	const reserved = 3 // superuser_reserved_connections
	need := apis*apiMaxConns + composeWorkerScale*workerMaxConns + reserved
	if need > maxConns {
		t.Errorf("postgres max_connections %d, want at least %d (%d APIs × %d + %d workers × %d + %d reserved)",
			maxConns, need, apis, apiMaxConns, composeWorkerScale, workerMaxConns, reserved)
	}
}

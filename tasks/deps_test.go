package tasks_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProducerDependencies keeps the package a checkout service imports
// free of the worker's dependencies: the WeChat Pay client (and with it the
// signing keys' code paths), the worker's logger, the retry policy and its
// backoff library, and the close handler. Only asynq, go-redis and the
// standard library (with what they import) may be linked.
func TestProducerDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not available: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-deps", "-f", "{{.ImportPath}}", "github.com/wxclose/wxclose/tasks").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || deps[len(deps)-1] != "github.com/wxclose/wxclose/tasks" {
		t.Fatalf("go list -deps gave an unexpected list (%d entries):\n%s", len(deps), out)
	}
	forbidden := []string{
		"github.com/wxclose/wxclose/wechat",
		"github.com/wxclose/wxclose/retry",
		"github.com/wxclose/wxclose/internal/closehandler",
		"github.com/rs/zerolog",
		"github.com/cenkalti/backoff",
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			// A prefix match also catches sub-packages and major versions
			// (wechat/sandbox, backoff/v4).
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("tasks depends on %s (forbidden: %s)", dep, f)
			}
		}
	}
}

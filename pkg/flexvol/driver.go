package flexvol

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/drover-net/drover/pkg/volumes"
)

// EnvFailpoint names a step at which the driver kills itself with SIGKILL
// (see volumes.Store.Failpoint). Tests use it to crash between two exact
// steps; it is never set in production.
const EnvFailpoint = "DROVER_LOCAL_FAILPOINT"

// Driver runs verbs against one configuration.
type Driver struct {
	cfg       Config
	failpoint string
	once      sync.Once
	st        *volumes.Store
	stErr     error
}

// NewDriver returns a driver for cfg.
func NewDriver(cfg Config) *Driver { return &Driver{cfg: cfg} }

// store opens the state directory on first use, so init touches nothing.
func (d *Driver) store() (*volumes.Store, error) {
	d.once.Do(func() {
		d.st, d.stErr = volumes.New(d.cfg.StateDir)
		if d.stErr == nil && d.failpoint != "" {
			fp := d.failpoint
			d.st.Failpoint = func(step string) {
				if step == fp {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {} // never answer after the kill
				}
			}
		}
	})
	return d.st, d.stErr
}

// Run answers one call. args is argv without the program name. It never
// panics out and always returns a status.
func (d *Driver) Run(ctx context.Context, args []string) (st Status, c call) {
	defer func() {
		if r := recover(); r != nil {
			st = failure(fmt.Sprintf("internal error: %v", r))
		}
	}()
	if len(args) == 0 {
		return failure("no command given; usage: local <command> [args...]"), c
	}
	c.verb = args[0]
	v, ok := verbs[args[0]]
	if !ok {
		// A verb a newer kubelet might send: its fallback applies.
		return notSupported(fmt.Sprintf("command %q is not supported", args[0])), c
	}
	if len(args)-1 != v.argc {
		return failure(fmt.Sprintf("%s takes %d arguments, got %d", args[0], v.argc, len(args)-1)), c
	}
	st = v.run(d, ctx, args[1:], &c)
	if st.Status == Failure && ctx.Err() != nil {
		st.Message = fmt.Sprintf("%s: %v after %s", st.Message, errDeadline, d.cfg.timeout(c.verb))
	}
	return st, c
}

// Main is the driver executable: it answers argv, prints exactly one JSON
// object on stdout and returns the exit code. Nothing is written to stderr.
// Past the verb's deadline plus a grace period it answers Failure even if a
// step is stuck in the kernel; the process exits with the answer, and the
// next call converges from wherever the stuck step left things.
func Main(args []string, stdout io.Writer, getenv func(string) string) int {
	start := time.Now()
	exe, err := os.Executable()
	if err != nil {
		exe = args[0]
	}
	cfg, cfgErr := LoadConfig(exe, getenv)
	verb := ""
	if len(args) > 1 {
		verb = args[1]
	}
	var (
		st Status
		c  = call{verb: verb}
	)
	if cfgErr != nil {
		st = failure(cfgErr.Error())
	} else {
		d := NewDriver(cfg)
		d.failpoint = getenv(EnvFailpoint)
		timeout := cfg.timeout(verb)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		type answer struct {
			st Status
			c  call
		}
		done := make(chan answer, 1)
		go func() {
			s, cc := d.Run(ctx, args[1:])
			done <- answer{s, cc}
		}()
		select {
		case a := <-done:
			st, c = a.st, a.c
		case <-time.After(timeout + 2*time.Second):
			st = failure(fmt.Sprintf("%s: %v after %s", verb, errDeadline, timeout))
		}
	}
	st.Write(stdout)
	logCall(cfg.LogDir, c, st, time.Since(start))
	return st.ExitCode()
}

// logLine is one line of the log file. It carries names and outcomes only:
// the options object is never logged, so secrets cannot reach the log.
type logLine struct {
	Time     string `json:"time"`
	PID      int    `json:"pid"`
	Verb     string `json:"verb"`
	Volume   string `json:"volume,omitempty"`
	PodDir   string `json:"podDir,omitempty"`
	Pod      string `json:"pod,omitempty"`
	Status   string `json:"status"`
	Message  string `json:"message,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Duration string `json:"duration"`
}

// logCall appends one line with a single write to an O_APPEND file, so
// concurrent calls never interleave. Logging is best effort: a driver that
// cannot log still answers kubelet.
func logCall(dir string, c call, st Status, took time.Duration) {
	if dir == "" {
		return
	}
	b, err := json.Marshal(logLine{
		Time: time.Now().UTC().Format(time.RFC3339Nano), PID: os.Getpid(),
		Verb: c.verb, Volume: c.volume, PodDir: c.podDir, Pod: c.pod,
		Status: st.Status, Message: st.Message, Detail: c.detail,
		Duration: took.Round(time.Microsecond).String(),
	})
	if err != nil {
		return
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, LogFileName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return
	}
	defer f.Close()
	f.Write(append(b, '\n'))
}

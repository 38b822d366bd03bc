package flexvol

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// ConfigFileName sits next to the driver executable. kubelet passes no flags
// and its environment is the node's, so a file beside the binary is what an
// installer (and a test) can always set.
const ConfigFileName = "drover-local.json"

// Environment overrides, for a tester or an installer that controls
// kubelet's environment; they win over the file.
const (
	EnvConfig   = "DROVER_LOCAL_CONFIG"    // path of the config file
	EnvStateDir = "DROVER_LOCAL_STATE_DIR" // state directory
	EnvLogDir   = "DROVER_LOCAL_LOG_DIR"   // log directory
)

// Defaults.
const (
	DefaultStateDir = "/var/lib/drover"
	DefaultLogDir   = "/var/log/drover"
	LogFileName     = "local.log"
)

// Config is the driver's configuration.
type Config struct {
	StateDir string
	LogDir   string
	MinSize  int64
	MaxSize  int64
	// Timeouts per verb; a verb absent here gets defaultTimeout.
	Timeouts map[string]time.Duration
}

// defaultTimeouts: mount and expandfs may run mkfs or resize2fs on a large
// image; everything else is bookkeeping. kubelet itself sets no deadline
// except for waitforattach, so the driver bounds its own calls.
var defaultTimeouts = map[string]time.Duration{
	"init":     5 * time.Second,
	"mount":    2 * time.Minute,
	"unmount":  time.Minute,
	"expandfs": 5 * time.Minute,
}

const defaultTimeout = 10 * time.Second

// fileConfig is the JSON form of the config file.
type fileConfig struct {
	StateDir string            `json:"stateDir"`
	LogDir   string            `json:"logDir"`
	MinSize  string            `json:"minSize"`
	MaxSize  string            `json:"maxSize"`
	Timeouts map[string]string `json:"timeouts"`
}

// LoadConfig reads the configuration for the executable at exe: defaults,
// then the config file ($DROVER_LOCAL_CONFIG, else drover-local.json next to
// exe; a missing file is fine), then the environment overrides.
func LoadConfig(exe string, getenv func(string) string) (Config, error) {
	if path := getenv(EnvConfig); path != "" {
		return LoadConfigFile(path, getenv)
	}
	return loadConfig(filepath.Join(filepath.Dir(exe), ConfigFileName), false, getenv)
}

// LoadConfigFile reads the configuration from the file at path, which must
// exist (an empty path means none: the defaults), then applies the
// environment's state and log directory overrides, as the driver would. It
// is for tools that find the driver's file themselves (the admin command).
func LoadConfigFile(path string, getenv func(string) string) (Config, error) {
	return loadConfig(path, true, getenv)
}

func loadConfig(path string, explicit bool, getenv func(string) string) (Config, error) {
	c := Config{
		StateDir: DefaultStateDir, LogDir: DefaultLogDir,
		MinSize: 16 << 20, MaxSize: 16 << 40,
		Timeouts: map[string]time.Duration{},
	}
	for k, v := range defaultTimeouts {
		c.Timeouts[k] = v
	}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			if err := c.apply(b); err != nil {
				return c, fmt.Errorf("config %s: %w", path, err)
			}
		case errors.Is(err, os.ErrNotExist) && !explicit:
		default:
			return c, fmt.Errorf("read config: %w", err)
		}
	}
	if v := getenv(EnvStateDir); v != "" {
		c.StateDir = v
	}
	if v := getenv(EnvLogDir); v != "" {
		c.LogDir = v
	}
	if !filepath.IsAbs(c.StateDir) || !filepath.IsAbs(c.LogDir) {
		return c, fmt.Errorf("state and log directories must be absolute paths")
	}
	return c, nil
}

func (c *Config) apply(b []byte) error {
	var f fileConfig
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if f.StateDir != "" {
		c.StateDir = f.StateDir
	}
	if f.LogDir != "" {
		c.LogDir = f.LogDir
	}
	for _, p := range []struct {
		s   string
		dst *int64
	}{{f.MinSize, &c.MinSize}, {f.MaxSize, &c.MaxSize}} {
		if p.s == "" {
			continue
		}
		q, err := resource.ParseQuantity(p.s)
		if err != nil || q.Sign() <= 0 {
			return fmt.Errorf("size %q is not a positive quantity", p.s)
		}
		*p.dst = q.Value()
	}
	if c.MinSize > c.MaxSize {
		return fmt.Errorf("minSize is above maxSize")
	}
	for verb, s := range f.Timeouts {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("timeout %q of %s is not a positive duration", s, verb)
		}
		c.Timeouts[verb] = d
	}
	return nil
}

func (c Config) limits() Limits { return Limits{MinSize: c.MinSize, MaxSize: c.MaxSize} }

func (c Config) timeout(verb string) time.Duration {
	if d, ok := c.Timeouts[verb]; ok {
		return d
	}
	return defaultTimeout
}

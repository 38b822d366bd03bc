package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Flag defaults from DROVER_<NAME> environment variables, so a DaemonSet
// can configure droverd from a ConfigMap with envFrom. A variable that is
// set but does not parse is an error, not a silent default.

var envErrs []error

func env(name, def string) string {
	if v, ok := os.LookupEnv("DROVER_" + name); ok {
		return v
	}
	return def
}

func envParse[T any](name string, def T, parse func(string) (T, error)) T {
	v, ok := os.LookupEnv("DROVER_" + name)
	if !ok || v == "" {
		return def
	}
	p, err := parse(v)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("DROVER_%s=%q: %w", name, v, err))
		return def
	}
	return p
}

func envInt(name string, def int) int { return envParse(name, def, strconv.Atoi) }

func envBool(name string, def bool) bool { return envParse(name, def, strconv.ParseBool) }

func envDuration(name string, def time.Duration) time.Duration {
	return envParse(name, def, time.ParseDuration)
}

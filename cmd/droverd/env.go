package main

import (
	"os"
	"strconv"
	"time"
)

// Flag defaults from DROVER_<NAME> environment variables, so a DaemonSet
// can configure droverd from a ConfigMap with envFrom.

func env(name, def string) string {
	if v, ok := os.LookupEnv("DROVER_" + name); ok {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(env(name, "")); err == nil {
		return v
	}
	return def
}

func envBool(name string, def bool) bool {
	if v, err := strconv.ParseBool(env(name, "")); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(env(name, "")); err == nil {
		return v
	}
	return def
}

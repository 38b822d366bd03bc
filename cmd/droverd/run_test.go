package main

import (
	"strings"
	"testing"
)

func TestValidNodeName(t *testing.T) {
	for name, ok := range map[string]bool{
		"node-1": true, "ip-10-0-0-1.ec2.internal": true, "a": true,
		"": false, "Node": false, "../etc": false, "a/b": false, "-a": false, "a-": false, "a..b": false,
		"a b": false, strings.Repeat("a", 254): false,
	} {
		if err := validNodeName(name); (err == nil) != ok {
			t.Errorf("validNodeName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestFlagsRefuseBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"an unknown flag", []string{"--bogus"}, nil, "bogus"},
		{"a stray argument", []string{"extra"}, nil, "unexpected"},
		{"a non-numeric VNI in the environment", nil, map[string]string{"DROVER_VNI": "one"}, "DROVER_VNI"},
		{"a bad duration", []string{"--resync", "soon"}, nil, "resync"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			envErrs = nil
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := parseFlags(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

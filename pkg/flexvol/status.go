// Package flexvol is the Flexvolume contract's edge for the drover/local
// driver: kubelet's argv and JSON options in, exactly one JSON status object
// out. It validates everything a caller sends, maps each verb onto
// pkg/volumes, and writes one log line per call. The exec contract is the
// one kubelet v1.37 implements in k8s.io/kubernetes/pkg/volume/flexvolume;
// the comments on each verb cite the kubelet code that decides the answer.
//
// It does not mount anything itself; that is pkg/volumes' job.
package flexvol

import (
	"encoding/json"
	"io"
)

// Status values kubelet understands (driver-call.go: StatusSuccess,
// StatusNotSupported; anything else is a failure).
const (
	Success      = "Success"
	Failure      = "Failure"
	NotSupported = "Not supported"
)

// Capabilities answer init. Field names follow kubelet's
// DriverCapabilities JSON tags.
type Capabilities struct {
	Attach           bool `json:"attach"`
	SELinuxRelabel   bool `json:"selinuxRelabel"`
	SupportsMetrics  bool `json:"supportsMetrics"`
	FSGroup          bool `json:"fsGroup"`
	RequiresFSResize bool `json:"requiresFSResize"`
}

// Status is the one object printed on stdout. Field names follow kubelet's
// DriverStatus JSON tags.
type Status struct {
	Status       string        `json:"status"`
	Message      string        `json:"message,omitempty"`
	Device       string        `json:"device,omitempty"`
	VolumeName   string        `json:"volumeName,omitempty"`
	Attached     bool          `json:"attached,omitempty"`
	Capabilities *Capabilities `json:"capabilities,omitempty"`
}

func success(msg string) Status      { return Status{Status: Success, Message: msg} }
func failure(msg string) Status      { return Status{Status: Failure, Message: msg} }
func notSupported(msg string) Status { return Status{Status: NotSupported, Message: msg} }

// ExitCode is 0 only for Success (kubelet reads the JSON either way, but
// scripts and people read the exit code).
func (s Status) ExitCode() int {
	if s.Status == Success {
		return 0
	}
	return 1
}

// Write prints the status as one JSON object and a newline.
func (s Status) Write(w io.Writer) error {
	b, err := json.Marshal(s)
	if err != nil {
		b = []byte(`{"status":"Failure","message":"internal error: cannot encode status"}`)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

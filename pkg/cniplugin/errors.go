package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// drover's own CNI error codes. The spec reserves 0-99; these are documented
// in the README so a runtime's logs can be read against them.
const (
	// ErrPoolExhausted: every address of the node's pod CIDR is allocated.
	ErrPoolExhausted uint = 100
	// ErrAddressUnavailable: a requested address (runtimeConfig ips) is
	// outside the pool, reserved, or held by another attachment.
	ErrAddressUnavailable uint = 101
	// ErrDatapath: a netlink operation on the bridge or veth failed.
	ErrDatapath uint = 102
	// ErrIPAMStore: the IPAM store could not be read or written.
	ErrIPAMStore uint = 103
	// ErrCheckFailed: CHECK found the attachment diverging from prevResult.
	ErrCheckFailed uint = 104
)

// newError builds a CNI error object: msg says what failed in words a node
// operator can act on, err (when set) the chain of causes.
func newError(code uint, msg string, err error) *types.Error {
	details := ""
	if err != nil {
		details = err.Error()
	}
	return types.NewError(code, msg, details)
}

// withUndoError adds the failure to undo a failed ADD to the error of the
// step that failed. skel prints the first *types.Error in the chain and
// drops whatever wraps it, so the undo failure must be inside that object,
// in msg and details, for the runtime (and its logs) to see it; the chain
// still wraps undoErr for callers in-process.
func withUndoError(err, undoErr error) error {
	var obj *types.Error
	if !errors.As(err, &obj) {
		obj = newError(types.ErrInternal, "ADD failed", err)
	}
	details := undoErr.Error()
	if obj.Details != "" {
		details = obj.Details + "; " + details
	}
	both := &types.Error{Code: obj.Code, Msg: obj.Msg + "; undoing the ADD failed too", Details: details}
	return fmt.Errorf("%w: %w", both, undoErr)
}

// Version is the plugin's release, reported in its "about" line.
var Version = "v0.1.0-dev"

// SupportedVersions are the CNI spec versions drover accepts and answers in.
// 0.1.0 and 0.2.0 predate the result format the meta plugins chain on.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

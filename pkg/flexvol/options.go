package flexvol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/drover-net/drover/pkg/volumes"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Option keys. The kubernetes.io/ ones are what kubelet v1.37 adds itself
// (pkg/volume/flexvolume/driver-call.go: NewOptionsForDriver, and
// mounter.go: SetUpAt's extraOptions); volumeID and size come from the
// PV's or inline volume's spec.flexVolume.options.
const (
	optVolumeID      = "volumeID"
	optSize          = "size"
	optFSType        = "kubernetes.io/fsType"
	optReadWrite     = "kubernetes.io/readwrite"
	optFSGroup       = "kubernetes.io/mounterArgs.FsGroup"
	optPVOrVolName   = "kubernetes.io/pvOrVolumeName"
	optPodName       = "kubernetes.io/pod.name"
	optPodNamespace  = "kubernetes.io/pod.namespace"
	optPodUID        = "kubernetes.io/pod.uid"
	optServiceAcct   = "kubernetes.io/serviceAccount.name"
	optSecretPrefix  = "kubernetes.io/secret/"
	maxOptionsLength = 1 << 20
)

// known are the accepted keys besides kubernetes.io/secret/*; the pod and
// service-account keys are accepted and ignored (kubelet always sends them).
var known = map[string]bool{
	optVolumeID: true, optSize: true, optFSType: true, optReadWrite: true,
	optFSGroup: true, optPVOrVolName: true, optPodName: true,
	optPodNamespace: true, optPodUID: true, optServiceAcct: true,
}

// Options is a parsed, validated options object.
type Options struct {
	Name     string // volumeID, else kubernetes.io/pvOrVolumeName
	Size     int64  // bytes; 0 when absent
	FSType   string // ext4 (default) or xfs
	ReadOnly bool
	FSGroup  *int64
	PodName  string // for the log line only
	Secrets  int    // how many secret keys were passed (never their values)
}

// Limits bound the size option.
type Limits struct {
	MinSize, MaxSize int64
}

// ErrBadOptions marks every validation failure of the options object.
var ErrBadOptions = errors.New("invalid options")

// ParseOptions parses the JSON object kubelet passes. Every value must be a
// JSON string (kubelet marshals a map[string]string). Messages name keys and
// the offending non-secret values, never a secret's value.
func ParseOptions(raw string, lim Limits) (Options, error) {
	var o Options
	if len(raw) > maxOptionsLength {
		return o, fmt.Errorf("%w: options JSON is larger than %d bytes", ErrBadOptions, maxOptionsLength)
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	var fields map[string]json.RawMessage
	if err := dec.Decode(&fields); err != nil {
		return o, fmt.Errorf("%w: options are not a JSON object: %s", ErrBadOptions, jsonProblem(err))
	}
	if fields == nil {
		return o, fmt.Errorf("%w: options are not a JSON object", ErrBadOptions)
	}
	if dec.More() {
		return o, fmt.Errorf("%w: trailing data after the options object", ErrBadOptions)
	}
	vals := make(map[string]string, len(fields))
	var unknown []string
	for k, v := range fields {
		secret := strings.HasPrefix(k, optSecretPrefix)
		if !secret && !known[k] {
			unknown = append(unknown, k)
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil || !bytes.HasPrefix(bytes.TrimSpace(v), []byte(`"`)) {
			return o, fmt.Errorf("%w: option %q must be a string", ErrBadOptions, k)
		}
		if secret {
			o.Secrets++
			continue // values are not needed, and never kept
		}
		vals[k] = s
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return o, fmt.Errorf("%w: unknown option %s (known: volumeID, size, and the kubernetes.io/ keys kubelet adds)", ErrBadOptions, quoteAll(unknown))
	}

	o.Name = vals[optVolumeID]
	if o.Name == "" {
		o.Name = vals[optPVOrVolName]
	}
	if o.Name == "" {
		return o, fmt.Errorf("%w: no volume name: set option volumeID (or let kubelet pass %s)", ErrBadOptions, optPVOrVolName)
	}
	if err := volumes.ValidName(o.Name); err != nil {
		return o, fmt.Errorf("%w: %w", ErrBadOptions, err)
	}

	switch fs := vals[optFSType]; fs {
	case "", volumes.FSExt4:
		o.FSType = volumes.FSExt4
	case volumes.FSXFS:
		o.FSType = volumes.FSXFS
	default:
		return o, fmt.Errorf("%w: fsType %q is not supported (ext4, xfs)", ErrBadOptions, fs)
	}

	switch rw := vals[optReadWrite]; rw {
	case "", "rw":
	case "ro":
		o.ReadOnly = true
	default:
		return o, fmt.Errorf("%w: %s must be \"ro\" or \"rw\", not %q", ErrBadOptions, optReadWrite, rw)
	}

	if g, ok := vals[optFSGroup]; ok && g != "" {
		n, err := strconv.ParseInt(g, 10, 64)
		if err != nil || n < 0 || n > 1<<31-1 {
			return o, fmt.Errorf("%w: %s must be a group ID, not %q", ErrBadOptions, optFSGroup, g)
		}
		o.FSGroup = &n
	}

	if sz, ok := vals[optSize]; ok {
		n, err := parseSize(sz, o.FSType, lim)
		if err != nil {
			return o, err
		}
		o.Size = n
	}
	if vals[optPodName] != "" {
		o.PodName = vals[optPodNamespace] + "/" + vals[optPodName]
	}
	return o, nil
}

// parseSize reads a Kubernetes quantity ("10Gi", "500M") as whole bytes,
// rounded up to 4 KiB (the loop device and filesystems work in blocks).
func parseSize(s, fsType string, lim Limits) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%w: size %q is not a Kubernetes quantity (e.g. 1Gi)", ErrBadOptions, s)
	}
	if q.Sign() <= 0 {
		return 0, fmt.Errorf("%w: size %q must be positive", ErrBadOptions, s)
	}
	n, ok := q.AsInt64()
	if !ok {
		// Fractions of a byte, or more than int64 holds.
		if q.Cmp(*resource.NewQuantity(lim.MaxSize, resource.BinarySI)) > 0 {
			return 0, fmt.Errorf("%w: size %q is above the maximum of %s", ErrBadOptions, s, human(lim.MaxSize))
		}
		n = q.Value()
	}
	n = (n + 4095) &^ 4095
	min := lim.MinSize
	if fsType == volumes.FSXFS && min < volumes.MinXFSSize {
		min = volumes.MinXFSSize
	}
	if n < min {
		return 0, fmt.Errorf("%w: size %q is below the minimum of %s for %s", ErrBadOptions, s, human(min), fsType)
	}
	if n > lim.MaxSize {
		return 0, fmt.Errorf("%w: size %q is above the maximum of %s", ErrBadOptions, s, human(lim.MaxSize))
	}
	return n, nil
}

func human(n int64) string {
	return resource.NewQuantity(n, resource.BinarySI).String()
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// jsonProblem describes a decode error without quoting the input.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("found a JSON %s where an object was expected", typ.Value)
	default:
		return "unexpected end of input"
	}
}

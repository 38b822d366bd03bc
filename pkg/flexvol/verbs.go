package flexvol

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/drover-net/drover/pkg/volumes"
)

// call is one driver invocation as the log line reports it.
type call struct {
	verb, volume, podDir, pod, detail string
}

// verb answers one command. args excludes the verb itself.
type verb struct {
	argc int // exact argument count kubelet v1.37 passes
	run  func(d *Driver, ctx context.Context, args []string, c *call) Status
}

// verbs maps every command kubelet v1.37 can send (driver-call.go) to its
// answer for an attach:false driver. "Not supported" is used only where
// kubelet's fallback (the *-defaults.go files) does the right thing, because
// kubelet remembers it for the plugin's lifetime (DriverCall.Run calls
// plugin.unsupported), so it must never stand in for a passing failure.
var verbs = map[string]verb{
	// init: capabilities are probed once per plugin load (plugin.go
	// NewFlexVolumePlugin); attach:false makes kubelet use the
	// non-attachable plugin, which calls only mount/unmount on the node.
	"init": {0, func(*Driver, context.Context, []string, *call) Status {
		return Status{Status: Success, Capabilities: &Capabilities{
			Attach: false, SupportsMetrics: true, FSGroup: true,
			SELinuxRelabel: true, RequiresFSResize: true,
		}}
	}},
	// mount <pod-volume-dir> <json> (mounter.go SetUpAt).
	"mount": {2, (*Driver).mount},
	// unmount <pod-volume-dir> (unmounter.go TearDownAt).
	"unmount": {1, (*Driver).unmount},

	// attach <json> <node>: attacher-defaults.go Attach returns an empty
	// device path, which is right: there is no device to hand over.
	"attach": {2, unsupported("attach is not needed: volumes are node-local (attach:false)")},
	// detach <volume> <node>: detacher-defaults.go Detach returns nil.
	"detach": {2, unsupported("detach is not needed: volumes are node-local (attach:false)")},
	// waitforattach <device> <json>: the default returns the device path it
	// was given, unchanged.
	"waitforattach": {2, unsupported("waitforattach is not needed: volumes are node-local (attach:false)")},
	// isattached <json> <node>: on "Not supported" VolumesAreAttached
	// returns no verdict, so nothing is ever marked detached.
	"isattached": {2, unsupported("isattached is not needed: volumes are node-local (attach:false)")},
	// mountdevice <mount-dir> <device> <json>: Success, a no-op. The
	// fallback would format and mount a non-empty device path at the
	// device mount path (attacher-defaults.go MountDevice): a second
	// mount lifecycle beside the one mount runs. With attach:false kubelet
	// never calls it; a caller that does must not trigger that fallback.
	"mountdevice": {3, func(*Driver, context.Context, []string, *call) Status {
		return success("nothing to do: mount prepares the volume (attach:false)")
	}},
	// unmountdevice <mount-dir>: kubelet calls it only for a mounted device
	// mount path; the fallback (detacher-defaults.go UnmountDevice) is
	// mount.CleanupMountPoint, exactly right for a path drover never
	// mounts.
	"unmountdevice": {1, unsupported("unmountdevice is not needed: unmount releases the volume (attach:false)")},
	// getvolumename <json>: plugin.go GetVolumeName ignores a successful
	// answer and uses the PV or volume name either way.
	"getvolumename": {1, unsupported("getvolumename: kubelet uses the PV or volume name")},
	// expandvolume <json> <device-mount-path> <new> <old>: runs in the
	// controller manager, which cannot reach the node's image; the node
	// grows it in expandfs. Success returns newSize just as the default.
	"expandvolume": {4, func(_ *Driver, _ context.Context, args []string, c *call) Status {
		if _, err := parseBytes(args[2]); err != nil {
			return failure(err.Error())
		}
		return success("the node grows the volume in expandfs")
	}},
	// expandfs <json> <device> <device-mount-path> <new> <old>
	// (expander.go NodeExpand). A failure must stay a Failure: "Not
	// supported" would make kubelet fall back to a generic resize of an
	// empty device path, for the rest of the plugin's life.
	"expandfs": {5, (*Driver).expandfs},
}

func unsupported(msg string) func(*Driver, context.Context, []string, *call) Status {
	return func(*Driver, context.Context, []string, *call) Status { return notSupported(msg) }
}

func (d *Driver) mount(ctx context.Context, args []string, c *call) Status {
	c.podDir = args[0]
	o, err := ParseOptions(args[1], d.cfg.limits())
	if err != nil {
		return failure(err.Error())
	}
	c.volume, c.pod = o.Name, o.PodName
	st, err := d.store()
	if err != nil {
		return failure(err.Error())
	}
	res, err := st.Mount(ctx, volumes.MountRequest{
		Name: o.Name, Size: o.Size, FSType: o.FSType, ReadOnly: o.ReadOnly,
		FSGroup: o.FSGroup, PodDir: args[0],
	})
	c.detail = fmt.Sprintf("created=%t formatted=%t device=%s readOnly=%t", res.Created, res.Formatted, res.Device, o.ReadOnly)
	d.sweep(ctx, st, c)
	if err != nil {
		return failure(fmt.Sprintf("mount volume %s at %s: %v", o.Name, args[0], err))
	}
	return success("")
}

func (d *Driver) unmount(ctx context.Context, args []string, c *call) Status {
	c.podDir = args[0]
	st, err := d.store()
	if err != nil {
		return failure(err.Error())
	}
	res, err := st.Unmount(ctx, args[0])
	c.volume = res.Volume
	c.detail = fmt.Sprintf("alreadyGone=%t", res.AlreadyGone)
	d.sweep(ctx, st, c)
	if err != nil {
		return failure(fmt.Sprintf("unmount %s: %v", args[0], err))
	}
	return success("")
}

// sweep releases the volumes other calls left mounted globally without a
// pod (volumes.Store.Sweep), after this call's own work and only within its
// deadline. The outcome goes to the log line only: another volume's
// leftovers never change this call's answer.
func (d *Driver) sweep(ctx context.Context, st *volumes.Store, c *call) {
	if ctx.Err() != nil {
		return
	}
	released, err := st.Sweep(ctx)
	if len(released) > 0 {
		c.detail += " released=" + strings.Join(released, ",")
	}
	if err != nil {
		c.detail += fmt.Sprintf(" sweepError=%q", err.Error())
	}
}

func (d *Driver) expandfs(ctx context.Context, args []string, c *call) Status {
	o, err := ParseOptions(args[0], d.cfg.limits())
	if err != nil {
		return failure(err.Error())
	}
	c.volume, c.podDir = o.Name, args[2]
	newSize, err := parseBytes(args[3])
	if err != nil {
		return failure(err.Error())
	}
	if _, err := parseBytes(args[4]); err != nil {
		return failure(err.Error())
	}
	// The maximum bounds the size the image really gets, so it is checked
	// after rounding up to 4 KiB; checking first as well keeps the
	// rounding from overflowing near the top of int64.
	if newSize > d.cfg.MaxSize || (newSize+4095)&^4095 > d.cfg.MaxSize {
		return failure(fmt.Sprintf("new size %d, rounded up to 4 KiB, is above the maximum of %d bytes", newSize, d.cfg.MaxSize))
	}
	newSize = (newSize + 4095) &^ 4095
	c.detail = fmt.Sprintf("newSize=%d", newSize)
	st, err := d.store()
	if err != nil {
		return failure(err.Error())
	}
	if err := st.Expand(ctx, o.Name, newSize); err != nil {
		return failure(fmt.Sprintf("expand volume %s: %v", o.Name, err))
	}
	return success("")
}

// parseBytes reads kubelet's sizes, which it formats with
// strconv.FormatInt(q.Value(), 10).
func parseBytes(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q is not a byte count", s)
	}
	return n, nil
}

// errDeadline is reported when a verb overruns its deadline.
var errDeadline = errors.New("deadline exceeded")

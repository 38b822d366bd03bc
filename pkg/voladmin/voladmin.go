// Package voladmin is the admin command for drover/local volumes:
// list (name, size, use, where mounted) and delete, as a table for people
// or JSON for scripts. Flexvolume has no delete verb, so volumes outlive
// their PVs until an admin removes them here.
//
// It holds argument parsing and output only; the work is pkg/volumes'.
package voladmin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-net/drover/pkg/volumes"
	"k8s.io/apimachinery/pkg/api/resource"
)

const usage = `usage: drover-volumes [flags] list
       drover-volumes [flags] delete NAME
       drover-volumes [flags] sweep

list shows every volume; delete removes one no pod uses; sweep releases
orphaned volumes (mounted with no pod: a mount killed before its bind mount
whose pod is gone) now, which the driver's next mount or unmount would do.

flags:
  --state-dir DIR   state directory to work on
  --config FILE     the driver's drover-local.json, to use its stateDir
  --plugin-dir DIR  kubelet's volume plugin dir: use DIR/drover~local/drover-local.json
  -o table|json     output format (default table)

Without --state-dir, the state directory is the stateDir of the driver's
config: --config, else $DROVER_LOCAL_CONFIG, else drover-local.json beside
the installed driver (in --plugin-dir, else in the running kubelet's plugin
dir and every known distribution's), else /var/lib/drover;
$DROVER_LOCAL_STATE_DIR overrides a file, as for the driver. Every run says
which directory it uses and why (on stderr with -o json).
`

// Main runs the command and returns its exit code: 0 done, 1 refused or
// failed, 2 bad usage.
func Main(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("drover-volumes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	stateDir := fs.String("state-dir", "", "state directory")
	cfgFile := fs.String("config", "", "driver config file")
	pluginDir := fs.String("plugin-dir", "", "kubelet volume plugin directory")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "drover-volumes: -o must be table or json\n")
		return 2
	}
	rest := fs.Args()
	argc := map[string]int{"list": 1, "delete": 2, "sweep": 1}
	if len(rest) == 0 || argc[rest[0]] != len(rest) {
		fs.Usage()
		return 2
	}
	ch, err := chooseStateDir(flags{*stateDir, *cfgFile, *pluginDir}, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "drover-volumes: %v\n", err)
		return 1
	}
	where := fmt.Sprintf("state dir %s (from %s)", ch.dir, ch.source)
	if *output == "json" {
		fmt.Fprintf(stderr, "drover-volumes: %s\n", where)
	} else {
		fmt.Fprintln(stdout, where)
	}
	// Open creates nothing: looking must not change the node.
	st, err := volumes.Open(ch.dir)
	if err != nil {
		fmt.Fprintf(stderr, "drover-volumes: %v\n", err)
		return 1
	}
	switch rest[0] {
	case "list":
		vols, err := st.List()
		if err != nil {
			fmt.Fprintf(stderr, "drover-volumes: %v\n", err)
			return 1
		}
		if *output == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(vols)
			return 0
		}
		printTable(stdout, vols)
		return 0
	case "sweep":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		released, err := st.Sweep(ctx)
		if *output == "json" {
			if released == nil {
				released = []string{}
			}
			json.NewEncoder(stdout).Encode(map[string]any{"stateDir": st.Root(), "released": released})
		} else {
			for _, name := range released {
				fmt.Fprintf(stdout, "released orphaned volume %s\n", name)
			}
			if len(released) == 0 && err == nil {
				fmt.Fprintln(stdout, "no orphaned volume")
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "drover-volumes: %v\n", err)
			return 1
		}
		return 0
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := st.Delete(ctx, rest[1])
		if *output == "json" {
			res := map[string]string{"name": rest[1], "result": "deleted", "stateDir": st.Root()}
			if err != nil {
				res["result"], res["error"] = "refused", err.Error()
			}
			json.NewEncoder(stdout).Encode(res)
		} else if err == nil {
			fmt.Fprintf(stdout, "deleted volume %s\n", rest[1])
		}
		if err != nil {
			if errors.Is(err, volumes.ErrInUse) {
				err = fmt.Errorf("%w (unmount it from every pod first)", err)
			}
			fmt.Fprintf(stderr, "drover-volumes: %v\n", err)
			return 1
		}
		return 0
	}
}

func printTable(w io.Writer, vols []volumes.VolumeInfo) {
	orphans := 0
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFSTYPE\tSIZE\tALLOCATED\tUSED\tMOUNTED AT")
	for _, v := range vols {
		used := "-"
		if v.UsedBytes != nil {
			used = human(*v.UsedBytes)
		}
		where := "-"
		switch {
		case len(v.MountedAt) > 0:
			where = strings.Join(v.MountedAt, ",")
		case v.Orphaned:
			where = "(orphaned: no pod)"
			orphans++
		case v.GlobalMount != "":
			where = "(global mount only, busy)"
		}
		fs := v.FSType
		if !v.Formatted {
			fs += " (unformatted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, fs, human(v.SizeBytes), human(v.AllocatedBytes), used, where)
	}
	tw.Flush()
	if orphans > 0 {
		fmt.Fprintf(w, "\n%d orphaned volume(s): mounted with no pod; the next mount or unmount on this node releases them, or run drover-volumes sweep\n", orphans)
	}
}

// human prints bytes as a Kubernetes quantity when exact ("1Gi"), else in
// KiB below 1 MiB and MiB with one decimal above.
func human(n int64) string {
	switch {
	case n%(1<<20) == 0:
		return resource.NewQuantity(n, resource.BinarySI).String()
	case n < 1<<20:
		return fmt.Sprintf("%dKi", (n+1023)/1024)
	default:
		return fmt.Sprintf("%.1fMi", float64(n)/(1<<20))
	}
}

package install_test

import (
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// uninstallSettings are the DROVER_ variables `droverd uninstall` reads that
// say where drover put things; set for drover's DaemonSet, the uninstaller
// must see the same, or it cleans the defaults and leaves the rest behind.
var uninstallSettings = []string{
	"DROVER_STATE_FILE", "DROVER_IPAM_DIR", "DROVER_CNI_CONF_DIR", "DROVER_CNI_CONF_NAME",
	"DROVER_CNI_BIN_DIR", "DROVER_PLUGIN_DIR",
}

func daemonSet(t *testing.T, file string) appsv1.DaemonSet {
	t.Helper()
	for _, o := range manifest(t, file) {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		var ds appsv1.DaemonSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ds); err != nil {
			t.Fatal(err)
		}
		return ds
	}
	t.Fatalf("%s holds no DaemonSet", file)
	return appsv1.DaemonSet{}
}

func TestUninstallDaemonSetGetsDroversSettings(t *testing.T) {
	drover, uninstall := daemonSet(t, "drover.yaml"), daemonSet(t, "uninstall/uninstall.yaml")
	containers := func(ds appsv1.DaemonSet) []corev1.Container {
		return append(append([]corev1.Container{}, ds.Spec.Template.Spec.InitContainers...), ds.Spec.Template.Spec.Containers...)
	}
	for _, from := range containers(drover) {
		for _, to := range containers(uninstall) {
			for _, src := range from.EnvFrom {
				found := false
				for _, got := range to.EnvFrom {
					found = found || got.Prefix == src.Prefix && envSource(got) == envSource(src)
				}
				if !found {
					t.Errorf("%s's envFrom %s%v does not reach the uninstaller's %s", from.Name, src.Prefix, envSource(src), to.Name)
				}
			}
			for _, e := range from.Env {
				for _, s := range uninstallSettings {
					if e.Name == s && !hasEnv(to.Env, e) {
						t.Errorf("%s sets %s, the uninstaller's %s does not set it alike", from.Name, s, to.Name)
					}
				}
			}
		}
	}
}

// envSource is the ConfigMap or Secret an envFrom reads.
func envSource(s corev1.EnvFromSource) [2]string {
	switch {
	case s.ConfigMapRef != nil:
		return [2]string{"ConfigMap", s.ConfigMapRef.Name}
	case s.SecretRef != nil:
		return [2]string{"Secret", s.SecretRef.Name}
	}
	return [2]string{}
}

func hasEnv(env []corev1.EnvVar, want corev1.EnvVar) bool {
	for _, e := range env {
		if reflect.DeepEqual(e, want) {
			return true
		}
	}
	return false
}

package cniplugin

import (
	"encoding/json"
	"fmt"
	"io"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// PrintVersion answers VERSION. The spec has the answer's cniVersion be the
// one the caller sent; skel instead always answers with the version it
// implements and never reads stdin for VERSION, so main routes VERSION here.
// Input without a usable cniVersion (none, or not JSON) gets the version
// drover implements, which is what skel would have said.
func PrintVersion(stdin io.Reader, stdout io.Writer) error {
	answer := struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}{current.ImplementedSpecVersion, SupportedVersions.SupportedVersions()}
	data, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
	if err != nil {
		return fmt.Errorf("read VERSION input: %w", err)
	}
	var in struct {
		CNIVersion string `json:"cniVersion"`
	}
	if json.Unmarshal(data, &in) == nil && in.CNIVersion != "" {
		answer.CNIVersion = in.CNIVersion
	}
	if err := json.NewEncoder(stdout).Encode(answer); err != nil {
		return fmt.Errorf("print VERSION answer: %w", err)
	}
	return nil
}
